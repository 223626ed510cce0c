#!/usr/bin/env bash
# Issue 23's CIFAR-10 run on a GPU: specs/09_cifar10_gpu.toml (the search on all 45,000 training images,
# the paper's final recipe scaled by time caps), about 8 minutes of one H200. The run directory, its log
# and a summary of the final models (params, test accuracy) land in OUTDIR (default gpu-results/).
#
#   benchmarks/gpu_cifar.sh [OUTDIR] [CIFAR10_JPEG_ARCHIVE] [SPEC]   (SPEC: default specs/09_cifar10_gpu.toml)
#
# On this workplace's device machine, as benchmarks/gpu_session.sh (pymoo and deap from .whl/, the
# archive from .data/):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
#   benchmarks/gpu_cifar.sh $OUT .data/cifar10-jpg.tar.gz
set -uo pipefail
out=${1:-gpu-results}
data=${2:-../shared/data/cifar10-jpg/cifar10-jpg.tar.gz}
spec=${3:-specs/09_cifar10_gpu.toml}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
sed "s#^path = .*#path = \"$(realpath "$data")\"#" "$spec" > "$out/cifar10-gpu.toml"
start=$(date +%s)
timeout 570 python3 -c 'import sys; from nago_spec.runners.cli import main; sys.exit(main(sys.argv[1:]))' \
    run "$out/cifar10-gpu.toml" --out "$out/run" --progress plain 2>&1 | tee "$out/run.log"
echo "wall $(( $(date +%s) - start )) s" | tee -a "$out/run.log"
python3 - "$out/run" <<'PY' | tee "$out/summary.txt"
import json, sys
from pathlib import Path
manifest = Path(sys.argv[1]) / "models" / "manifest.json"
if not manifest.exists():
    sys.exit(f"no {manifest}: the run did not reach its final training")
m = json.loads(manifest.read_text())
for e in m["models"]:
    x = e["metrics"]
    print(f"{e['file']}: {e['params']:,} params, test {100 * x['test_accuracy']:.2f} %, val {100 * x['val_accuracy']:.2f} %, "
          f"{x['final_epochs']:.1f} epochs on {x['train_images']:,} images in {x['train_seconds']:.0f} s")
for f in m.get("failed", []):
    print(f"failed: trial {f['trial']} sample {f['sample']}: {f['error'].splitlines()[0]}")
PY
