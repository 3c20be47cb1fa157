#!/usr/bin/env bash
# GPU check for a machine with a CUDA GPU (no internet needed): the examples/mnist-style loop against
# ours for one epoch each, then the six models of the grid trained for 10 epochs and evaluated,
# then one epoch of PixMix augmentation alone.
#
#   benchmarks/gpu_check.sh                    # 60,000 pictures, 10 epochs, convnet (minutes of setup on the CPU)
#   benchmarks/gpu_check.sh --images 512 --test-images 128 --aux-images 512 --mixing-images 16 \
#       --epochs 1 --model small_convnet --device cpu      # the size knob: seconds, on the CPU
#
# Arguments go to `python -m benchmarks.gpu_check` (see its --help). Python: $PYTHON, else the
# project's .venv, else python3. Figures go to benchmarks/out/gpu_check.json; copy them into
# benchmarks/RESULTS.md with the date and the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=python3
fi
# glibc keeps freed memory instead of returning it to the OS (see docs/performance.md)
export MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912
"$python" -c "import torch; print('torch', torch.__version__, '| CUDA:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$python" -m benchmarks.gpu_check "$@"
