#!/bin/bash
# The CUDA checks and GPU figures of docs/scale.md ("Checked on a GPU"), in one run on a machine
# with a GPU:  bash benchmarks/gpu_check.sh [DATA_DIR]   (DATA_DIR: ../shared/data by default,
# holding mnist/ and cifar10/cifar10.npz). Prints each step's figures; about 5 minutes on an H200.
set -u
DATA=${1:-../shared/data}
RUNS=$(mktemp -d)
export PYTHONUNBUFFERED=1
echo "== tests/test_cuda.py"
python3 -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider
echo "== benchmarks/conv_throughput.py --device cuda"
python3 benchmarks/conv_throughput.py --data "$DATA/cifar10/cifar10.npz" --limit-train 10000 \
  --device cuda --epochs 2 --repeats 2
echo "== benchmarks/train_throughput.py --device cuda"
python3 benchmarks/train_throughput.py --data-dir "$DATA/mnist" --epochs 3 --device cuda --repeats 3
echo "== vaekit train --data mnist --device cuda (the default conv net), --amp off and bf16"
for amp in off bf16; do
  python3 -m vaekit train --data mnist --data-dir "$DATA/mnist" --device cuda --amp $amp \
    --epochs 3 --out "$RUNS/mnist-$amp" --quiet
  python3 -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; print('$amp: seconds an epoch', [r['seconds'] for r in rows])" "$RUNS/mnist-$amp/metrics.jsonl"
done
echo "== --nproc 2 on a machine with one GPU: one line, exit 2 (with two or more GPUs it trains)"
python3 -m vaekit train --data digits --device cuda --nproc 2 --epochs 1 --out "$RUNS/ddp" --quiet
echo "exit $?"
echo "== vaekit eval --iw-samples 5000 on 500 test images, cuda"
time python3 -m vaekit eval "$RUNS/mnist-off" --iw-samples 5000 --limit 500 --json
rm -rf "$RUNS"
