#!/bin/bash
# The CUDA path, checked on a machine with an NVIDIA GPU (CI has none): the GPU-relevant tests with
# device 'auto' (so fits and meshing run on the GPU), the training step against autograd, and
# quality cases timed on the GPU (siren3d alone: Open3D is not needed).
#
#     bash benchmarks/cuda_check.sh [SCAN ...]   # quality.py's scan names [default: cad thin, the
#                                                # synthetic shapes, so no scan data is needed]
#
# Run from the project root with siren3d importable (installed, or PYTHONPATH=.).
set -u
scans=${*:-cad thin}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('torch', torch.__version__)" || exit 1
echo "== tests (device auto: the GPU)"
$py -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_model.py tests/test_training.py \
    tests/test_meshing.py tests/test_faults.py -m "not slow" 2>&1 | tail -4
echo "== training step"
$py benchmarks/train_step.py --device cuda --batches 1536 16384 --rounds 5 --steps 10 --methods fused
echo "== quality: fit + mesh --res 512 on the GPU"
$py benchmarks/quality.py --scans $scans --no-poisson
