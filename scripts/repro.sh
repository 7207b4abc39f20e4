#!/usr/bin/env bash
# `make repro`: `dvc repro` with the datasets' pipelines run side by side.
#
# The stages of one dataset (params/run.yaml) never read another dataset's outputs; only
# `digits_data` (first) and `analysis` (last) are shared. So each dataset's stages run in their own
# `dvc repro`, JOBS at once (default: one per dataset, at most one per core), with the cores
# divided among them (OMP_NUM_THREADS): much of a stage is single-threaded (papermill and kernel
# start-up, imports, DVC's lock-file update), so two half-machine processes finish sooner than
# one whole-machine process after the other. A dataset's stages are passed in dvc.yaml's order,
# which is topological (tests/test_pipeline.py checks it), one at a time (--single-item), so no
# process touches a shared stage; DVC serialises the lock-file writes (--wait-for-lock waits for
# the other process instead of failing). Then the analysis, and a last `dvc repro` that runs
# anything left (nothing when dvc.yaml has only these stages). A failing dataset fails the run
# after the others finish; each dataset's log is .dvc/tmp/repro-<dataset>.log.
# Arguments go to each `dvc repro` that runs stages (e.g. `-f`: rerun every stage).
set -euo pipefail
cd "$(dirname "$0")/.."
DVC=${DVC:-dvc}
PY=${PYTHON:-python}

datasets=$("$PY" -c 'import yaml; print(" ".join(yaml.safe_load(open("params/run.yaml"))["datasets"]))')
cores=$(nproc 2>/dev/null || echo 1)
n=$(wc -w <<<"$datasets")
jobs=${JOBS:-$(( n < cores ? n : cores ))}
jobs=$(( jobs < 1 ? 1 : jobs ))
threads=$(( cores / jobs > 0 ? cores / jobs : 1 ))

if [ "$jobs" -le 1 ]; then
  exec "$DVC" repro "$@"
fi

all_stages=$("$DVC" stage list --name-only)
"$DVC" repro "$@" --single-item digits_data
echo "repro: $n datasets, $jobs at a time, $threads thread(s) each"
mkdir -p .dvc/tmp
failed=0
pids=()
for ds in $datasets; do
  targets=$(grep -E "@$ds(-|$)" <<<"$all_stages" || true)
  if [ -z "$targets" ]; then  # never `dvc repro --single-item` without targets: that is every stage
    echo "repro: dvc.yaml has no stage of dataset $ds" >&2
    failed=1
    continue
  fi
  if [ "${#pids[@]}" -ge "$jobs" ]; then  # wait for the oldest before starting another
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
  # shellcheck disable=SC2086  # one argument per stage name
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    "$DVC" --wait-for-lock repro "$@" --single-item $targets \
    >".dvc/tmp/repro-$ds.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
for ds in $datasets; do
  grep -E "^(Running stage|Stage '.*' didn't change|ERROR)" ".dvc/tmp/repro-$ds.log" | sed "s/^/[$ds] /" || true
done
if [ "$failed" -ne 0 ]; then
  echo "repro: a dataset's pipeline failed (see .dvc/tmp/repro-<dataset>.log)" >&2
  exit 1
fi
"$DVC" repro "$@" --single-item analysis
"$DVC" repro
