#!/usr/bin/env bash
# CUDA check for the trainer, run on a GPU machine with the release binary carried in
# gpu-bin/ (build it first: cargo build --release -p trainer && mkdir -p gpu-bin &&
# cp target/release/trainer gpu-bin/ && strip gpu-bin/trainer; xz it when the carried
# files must stay under a size limit: the script unpacks gpu-bin/trainer.xz).
#
# 1. Burn's and PyTorch's inference and training-step throughput for the same network
#    (base backbone + Men Tshirts heads) at 384 and 512 px, one process per measurement,
#    Burn first then PyTorch, so that nothing else runs on the GPU while one is timed.
# 2. A real training run on synthetic data at 384 px with the base backbone (a few
#    hundred AdamW steps), then evaluation and prediction on the GPU.
# 3. The default job's network trained for many epochs on the default synthetic data,
#    to see how its validation score grows with epochs (what the CPU default job can
#    afford is chosen from this curve).
# Everything it prints also goes to $OUT/gpu_check.log; training logs are copied to $OUT.
set -uo pipefail
BIN=${BIN:-gpu-bin/trainer}
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then xz -dkf "$BIN.xz" && chmod +x "$BIN"; fi
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
T0=$SECONDS
stamp() { echo "-- $1 (t=$((SECONDS - T0)) s)"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)"
"$BIN" --version

BATCH=16
bench_pair() {
  local SIZE=$1
  stamp "burn (CUDA backend, fusion + autotune): base at $SIZE px, batch $BATCH"
  timeout 80 "$BIN" bench --backbone base --image-size $SIZE --batch-size $BATCH --device cuda --seconds 4 --json
  timeout 80 "$BIN" bench --backbone base --image-size $SIZE --batch-size $BATCH --device cuda --seconds 4 --train --json
  stamp "pytorch eager: the same network and shapes"
  timeout 60 python3 scripts/torch_reference.py --image-size $SIZE --batch-size $BATCH --seconds 4
  timeout 60 python3 scripts/torch_reference.py --image-size $SIZE --batch-size $BATCH --seconds 4 --train
}
bench_pair 384

stamp "training on synthetic data: base, 384 px, batch 8, Men Tshirts"
"$BIN" synth --out /tmp/gpu-data --train-per-category 700 --test-per-category 60 --size 384 --seed 1
timeout 120 "$BIN" train --data /tmp/gpu-data --out /tmp/gpu-run --backbone base --image-size 384 \
  --batch-size 8 --phase1-epochs 3 --phase2-epochs 1 --lr 1e-4 --categories "Men Tshirts" \
  --device cuda --quiet
cp /tmp/gpu-run/train_log.jsonl "$OUT/base384_train_log.jsonl" 2>/dev/null
stamp "evaluate and predict on CUDA"
timeout 60 "$BIN" evaluate --run /tmp/gpu-run --device cuda
timeout 60 "$BIN" predict --run /tmp/gpu-run --category "Men Tshirts" --device cuda \
  /tmp/gpu-data/test_images/000000.jpg /tmp/gpu-data/test_images/000001.jpg

stamp "the default job's network for many epochs (three settings side by side)"
"$BIN" synth --out /tmp/default-data --train-per-category 240 --test-per-category 60 --size 64 --seed 7
"$BIN" synth --out /tmp/default-data-480 --train-per-category 480 --test-per-category 60 --size 64 --seed 7
common=(--image-size 64 --batch-size 32 --head-dim 64 --lr 3e-3 --device cuda --quiet --seed 42)
timeout 120 "$BIN" train --data /tmp/default-data --out /tmp/curve-small "${common[@]}" \
  --backbone default-small --phase1-epochs 24 --phase2-epochs 4 > "$OUT/curve-small.txt" 2>&1 &
timeout 120 "$BIN" train --data /tmp/default-data-480 --out /tmp/curve-small-480 "${common[@]}" \
  --backbone default-small --phase1-epochs 12 --phase2-epochs 3 > "$OUT/curve-small-480.txt" 2>&1 &
timeout 120 "$BIN" train --data /tmp/default-data --out /tmp/curve-atto "${common[@]}" \
  --backbone atto --phase1-epochs 24 --phase2-epochs 4 > "$OUT/curve-atto.txt" 2>&1 &
wait
for r in small small-480 atto; do
  cp /tmp/curve-$r/train_log.jsonl "$OUT/curve-$r.jsonl" 2>/dev/null
  echo "curve-$r:"
  tail -n 4 "$OUT/curve-$r.txt"
done

bench_pair 512
stamp "done"
