#!/usr/bin/env bash
# CUDA check for the trainer, run on a GPU machine with the release binary carried in
# gpu-bin/ (build it first: cargo build --release -p trainer && mkdir -p gpu-bin &&
# cp target/release/trainer gpu-bin/). Prints Burn's and PyTorch's training and
# inference throughput for the same network and shapes, then trains on synthetic data
# at 384 px with the base backbone and evaluates. Output goes to $OUT/gpu_check.log
# when OUT is set.
set -uo pipefail
BIN=${BIN:-gpu-bin/trainer}
LOG=${OUT:-/tmp}/gpu_check.log
SIZE=384
exec > >(tee "$LOG") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"

echo "== burn (CUDA backend): inference and training step, base at $SIZE px"
for B in 4 32; do
  timeout 150 "$BIN" bench --backbone base --image-size $SIZE --batch-size $B --device cuda --seconds 5 --json
  timeout 150 "$BIN" bench --backbone base --image-size $SIZE --batch-size $B --device cuda --seconds 5 --train --json
done

echo "== pytorch eager, same network and shapes"
for B in 4 32; do
  python3 scripts/torch_reference.py --image-size $SIZE --batch-size $B --seconds 5
  python3 scripts/torch_reference.py --image-size $SIZE --batch-size $B --seconds 5 --train
done

echo "== training on synthetic data: base, $SIZE px, batch 4, Men Tshirts"
time "$BIN" synth --out /tmp/gpu-data --train-per-category 700 --test-per-category 100 --size $SIZE --seed 1
time timeout 240 "$BIN" train --data /tmp/gpu-data --out /tmp/gpu-run --backbone base --image-size $SIZE \
  --batch-size 4 --phase1-epochs 2 --phase2-epochs 1 --lr 1e-4 --categories "Men Tshirts" --device cuda --quiet
tail -n 3 /tmp/gpu-run/train_log.jsonl
time "$BIN" evaluate --run /tmp/gpu-run --device cuda
echo "== done"
