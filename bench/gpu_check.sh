#!/usr/bin/env bash
# make gpu-check: every check that needs a CUDA GPU, in one command, on a machine that has
# its own CUDA build of torch (used as it is, never reinstalled) and perhaps no internet.
#
# A virtual environment that sees the machine's packages (torch, and TensorRT where it is
# installed) gets the project's other dependencies from ./wheels (filled by `make wheels`
# on a connected machine) or, without that folder, from the package index. Then:
# the gpu- and tensorrt-marked tests, a short bf16 training against the same run on the
# CPU, the attention kernels at batch 64 on yahoo_answers' lengths, the student packed
# against padded, and, where TensorRT is importable, an engine with its numeric check.
# Results: bench/results/gpu_*.json and one summary table; non-zero exit on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${GPU_VENV:-.venv-gpu}
WHEELS=${WHEELS:-wheels}
STEP_TIMEOUT=${STEP_TIMEOUT:-240}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: $PYTHON has no CUDA build of torch with a visible GPU" >&2
    exit 2
fi
torch_before=$("$PYTHON" -c "import torch; print(torch.__version__, torch.__file__)")
"$PYTHON" -m venv --system-site-packages "$VENV"
source_args=()
[ -d "$WHEELS" ] && source_args=(--no-index --find-links "$WHEELS")
# the train and export extras, without the dev tools: torch is already there and satisfies them
if ! "$VENV/bin/python" -m pip install -q "${source_args[@]}" -e '.[train,export]' pytest; then
    echo "gpu-check: installing the project's dependencies failed (from ${WHEELS:-the index}; make wheels fills it)" >&2
    exit 2
fi
torch_after=$("$VENV/bin/python" -c "import torch; print(torch.__version__, torch.__file__)")
if [ "$torch_before" != "$torch_after" ]; then
    echo "gpu-check: the install changed torch ($torch_before -> $torch_after)" >&2
    exit 2
fi

rm -f bench/results/gpu_*.json
for step in tests train attention student engine; do
    echo "== $step"
    if [ "$step" = attention ]; then
        timeout "$STEP_TIMEOUT" "$VENV/bin/python" bench/gpu_attention.py --batch 64
    else
        timeout "$STEP_TIMEOUT" "$VENV/bin/python" bench/gpu_check.py "$step"
    fi
    rc=$?
    [ "$rc" -ne 0 ] && echo "gpu-check: step $step exited $rc" >&2
done
"$VENV/bin/python" bench/gpu_check.py summary
