#!/usr/bin/env bash
# Issue 19's GPU checks as one command of about 8 minutes on a GPU machine: the gpu-marked tests, then
# benchmarks/bench_gpu.py (networks against hand-written layers, torch.compile, and the same specs/06
# trials on the GPU and on 2 CPU cores). Everything lands in OUTDIR (default gpu-results/):
#   gpu.txt (nvidia-smi), tests.log, bench.log, bench_gpu.json.
#
#   benchmarks/gpu_session.sh [OUTDIR] [CIFAR10_JPEG_ARCHIVE]
#
# On this workplace's device machine (a fresh python with CUDA torch but without pymoo and deap): put
# their wheels in .whl/ and the CIFAR-10 archive in .data/ (both ignored by git, see the device tool's
# README) and run, carrying .whl and .data:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
#   benchmarks/gpu_session.sh $OUT .data/cifar10-jpg.tar.gz
set -uo pipefail
out=${1:-gpu-results}
data=${2:-../shared/data/cifar10-jpg/cifar10-jpg.tar.gz}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" | tee -a "$out/gpu.txt"
timeout 200 python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -q -rs 2>&1 | tee "$out/tests.log"
timeout 300 python3 benchmarks/bench_gpu.py --data "$data" --budget 2 --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench.log"
