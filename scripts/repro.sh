#!/usr/bin/env bash
# `make repro`: `dvc repro` with the datasets' pipelines run side by side, and progress on the console.
#
# 1. Nothing to do: every dataset's images hashed in one process (`python -m siglip_adapter.fingerprint`,
#    what the `images` stages run; unchanged files are not re-read), then `dvc status` reports nothing
#    stale but those always-run stages: done, in seconds, without a `dvc repro`.
# 2. Otherwise `digits_data` and every dataset's `images` stage under DVC, which records them.
# 3. The stages of one dataset (params/run.yaml) never read another dataset's outputs; only
#    `digits_data` (first) and `analysis` (last) are shared. So each dataset's stages run in their own
#    `dvc repro` (its ablation in another, queued after every dataset's other stages: below), JOBS at
#    once (default: one per dataset, at most one per core): much of a stage is
#    single-threaded (papermill and kernel start-up, imports, DVC's lock-file update), so two
#    processes finish sooner than one after the other. Each stage sets its own thread count
#    (`threads` in params/run.yaml), so the numbers do not depend on this. A dataset's stages are
#    passed in dvc.yaml's order, which is topological (tests/test_pipeline.py checks it), one at a
#    time (--single-item), so no process touches a shared stage; DVC serialises the lock-file writes
#    (--wait-for-lock waits for the other process instead of failing).
# 4. The analysis, then any stage none of the above named (none while dvc.yaml has only these), each
#    alone: a stage is never run twice (with `-f`, a last plain `dvc repro -f` would rerun them all).
#
# DATASETS="a b" (make repro DATASETS=...): only those datasets of params/run.yaml, then the analysis
# over every dataset's results as they are (the others' are committed): a new dataset's row without
# recomputing the rest.
#
# The console shows each stage as it starts and finishes, and a failed stage's own error message;
# each dataset's whole output is in .dvc/tmp/repro-<dataset>.log (its ablation's in
# repro-<dataset>-ablation.log). A failing dataset fails the run
# after the others finish; outputs are `persist` in dvc.yaml, so a failed stage leaves the previous
# run's files in place (and stays stale until it succeeds).
# Arguments go to each `dvc repro` (e.g. `-f`: rerun every stage; then step 2 is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
DVC=${DVC:-dvc}
PY=${PYTHON:-python}
export REPRO_START=${REPRO_START:-$(date +%s)} PYTHONUNBUFFERED=1
mkdir -p .dvc/tmp

# run LABEL dvc-arguments...: one `dvc repro` with its progress on the console and its output in the log.
run() {
  local label=$1
  shift
  set +e
  "$DVC" "$@" 2>&1 | "$PY" scripts/progress.py "$label" ".dvc/tmp/repro-$label.log"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

listed=$("$PY" -c 'import yaml; print(" ".join(yaml.safe_load(open("params/run.yaml"))["datasets"]))')
datasets=${DATASETS:-$listed}
for ds in $datasets; do
  if ! grep -qw -- "$ds" <<<"$listed"; then
    echo "repro: DATASETS names '$ds', which params/run.yaml does not list (it lists: $listed); add it there first" >&2
    exit 2
  fi
done
# Up to date: the images hashed as their stages would (an image that changed changes images.json,
# which then differs from what dvc.lock recorded), and `dvc status` reports nothing for the selected
# datasets' stages, the shared ones and the analysis but the `images` stages' "always changed".
up_to_date='
import json, os, sys
mine = os.environ["SELECTED"].split()
ours = lambda s: "@" not in s or any(s.endswith("@" + d) or "@" + d + "-" in s for d in mine)
sys.exit(any(e != "always changed" for s, v in json.load(sys.stdin).items() if ours(s) for e in v))'
# shellcheck disable=SC2086  # one argument per dataset
if [ $# -eq 0 ] && "$PY" -m siglip_adapter.fingerprint $datasets >/dev/null 2>&1 \
    && "$DVC" status --json | SELECTED="$datasets" "$PY" -c "$up_to_date"; then
  echo "repro: up to date (nothing changed since the last run; \`make repro ARGS=-f\` reruns everything)"
  exit 0
fi

images=$(for ds in $datasets; do printf 'images@%s ' "$ds"; done)
# shellcheck disable=SC2086  # one argument per stage name
run setup repro "$@" --single-item digits_data $images

# The jobs: each dataset's stages but its ablation, then each dataset's ablation (which reads no other
# stage's outputs, only the stores the runs share: content-keyed, written atomically), started in that
# order as workers free up. A dataset's ablation is a job of its own so that the worker whose dataset
# finishes first takes it, rather than one worker running a dataset's ablation after its other stages
# while the other waits.
all_stages=$("$DVC" stage list --name-only)
# globs DATASET NAMES: the dataset's stage names (one per line) as one pattern per stage kind (`<kind>@<ds>-*` for a
# matrix stage, the name itself for a foreach one) when those patterns select exactly those stages of
# dvc.yaml, else the names. DVC collects each target by re-reading dvc.yaml and dvc.lock (about 0.4 s
# a target here, with the repository locked), so 6 patterns start a dataset's run sooner than its 21
# names; `--glob` keeps dvc.yaml's order within a pattern, and the patterns keep the names' order.
globs() {
  local ds=$1 names=$2 pats=() n p kind hit matched=""
  while read -r n; do
    kind=${n%%@*}
    if [ "$n" = "$kind@$ds" ]; then p=$n; else p="$kind@$ds-*"; fi
    [[ " ${pats[*]-} " == *" $p "* ]] || pats+=("$p")
  done <<<"$names"
  while read -r n; do
    hit=0
    for p in "${pats[@]}"; do
      # shellcheck disable=SC2053  # $p is a glob pattern on purpose
      if [[ $n == $p ]]; then hit=1; fi
    done
    if [ "$hit" -eq 1 ]; then matched+="$n"$'\n'; fi
  done <<<"$all_stages"
  if [ "${matched%$'\n'}" = "$names" ]; then echo "${pats[*]}"; else tr '\n' ' ' <<<"$names"; fi
}
failed=0
jobs_list=()
asides=()
for ds in $datasets; do
  targets=$(grep -E "@$ds(-|$)" <<<"$all_stages" | grep -v "^images@" || true)
  if [ -z "$targets" ]; then  # never `dvc repro --single-item` without targets: that is every stage
    echo "repro: dvc.yaml has no stage of dataset $ds" >&2
    failed=1
    continue
  fi
  main=$(grep -v "^ablation@" <<<"$targets" || true)
  aside=$(grep "^ablation@" <<<"$targets" || true)
  if [ -n "$main" ]; then jobs_list+=("$ds:$(globs "$ds" "$main")"); fi
  if [ -n "$aside" ]; then asides+=("$ds-ablation:$(globs "$ds" "$aside")"); fi
done
jobs_list+=(${asides[@]+"${asides[@]}"})
cores=$(nproc 2>/dev/null || echo 1)
n=$(wc -w <<<"$datasets")
workers=${JOBS:-$(( n < cores ? n : cores ))}
workers=$(( workers < 1 ? 1 : workers ))
echo "repro: $n datasets, $workers at a time; progress below, each dataset's whole output in .dvc/tmp/repro-<dataset>.log (its ablation's in repro-<dataset>-ablation.log)"
pids=()
for job in ${jobs_list[@]+"${jobs_list[@]}"}; do
  while [ "$(jobs -pr | wc -l)" -ge "$workers" ]; do  # wait for a free worker (`wait -n` needs bash 4.3)
    sleep 0.5
  done
  label=${job%%:*}
  # shellcheck disable=SC2086  # one argument per stage name
  set -f  # the patterns reach DVC unexpanded
  run "$label" --wait-for-lock repro "$@" --single-item --glob ${job#*:} &
  set +f
  pids+=($!)
done
for pid in ${pids[@]+"${pids[@]}"}; do
  wait "$pid" || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "repro: a dataset's pipeline failed (its error is above; the whole output in .dvc/tmp/repro-<dataset>.log)" >&2
  exit 1
fi
run analysis repro "$@" --single-item analysis
if [ -z "${DATASETS:-}" ]; then
  named=$(for ds in $listed; do grep -E "@$ds(-|$)" <<<"$all_stages" || true; done)
  leftover=$(grep -vxF -e digits_data -e analysis -f <(printf '%s\n' "$named") <<<"$all_stages" || true)
  if [ -n "$leftover" ]; then
    # shellcheck disable=SC2086  # one argument per stage name
    run rest repro "$@" --single-item $leftover
  fi
fi
