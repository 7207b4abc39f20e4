#!/usr/bin/env bash
# Create the virtual environment and install the kit with its extras.
# torch: a CUDA build where a GPU answers nvidia-smi, else the CPU wheel torch==2.13.0
# (on the kit's build machines a local file; elsewhere PyPI's build). TORCH_SPEC overrides both,
# and TORCH_INDEX_URL points pip at another index (e.g. PyTorch's CPU-only one).
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)

if [ -n "${TORCH_SPEC:-}" ]; then
  spec=$TORCH_SPEC
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  spec="torch>=2.6"
  echo "install: GPU found, installing a CUDA build of torch"
else
  spec="torch==2.13.0"
  echo "install: no GPU, installing the CPU build torch==2.13.0"
fi
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  "${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$spec"
fi
"${pip[@]}" -e ".[dev]"
echo "install: done ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'))"
