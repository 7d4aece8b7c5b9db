#!/usr/bin/env bash
# The CUDA check, made to fit one 10-minute call on a GPU machine (BUDGET seconds in
# all). Run from the repository root with the release binary carried in gpu-bin/:
#   cargo build --release -p trainer && mkdir -p gpu-bin && cp target/release/trainer gpu-bin/ \
#     && strip gpu-bin/trainer && xz -T2 -6 -f gpu-bin/trainer    # the script unpacks it
#
# Burn's CUDA backend compiles its kernels at run time (and, in a build with the
# trainer's `autotune` feature, every candidate of the big ones), so a fresh process
# spends a while before its first step finishes. The check therefore
#  1. warms three variants side by side, each in its own folder with its own kernel
#     caches: kernel fusion on and off (TRAINER_CUDA_FUSION=0), and fusion on with
#     Burn's own stem and downsampling convolutions (TRAINER_PATCH_CONV=stock), printing
#     how long each warm-up iteration took (the start-up cost a job pays);
#  2. times, one process at a time and from those caches, inference and a training step
#     of the same network (base backbone + Men Tshirts heads, 384 px, batch 16) for each
#     variant that finished warming, then PyTorch eager on the same shapes;
#  3. trains for a few hundred steps on synthetic data at 384 px with the variant whose
#     training step was fastest, then evaluates and predicts on the GPU;
#  4. with what time is left, 512 px for the fastest variant and for PyTorch;
#  5. if Nsight Compute (ncu) is there and time is left, the GPU time of each kernel of
#     the fastest variant's training step.
# Everything it prints also goes to $OUT/gpu_check.log; the measurements as JSON lines to
# $OUT/burn.jsonl and $OUT/torch.jsonl, the 384 px run's log to $OUT/base384_train_log.jsonl.
set -uo pipefail
REPO=$(pwd)
BIN=${BIN:-$REPO/gpu-bin/trainer}
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then xz -dkf "$BIN.xz" && chmod +x "$BIN"; fi
OUT=${OUT:-/tmp/gpu-check-out}
TMP=/tmp/gpu-check-tmp
BUDGET=${BUDGET:-560}
WARM=${WARM:-240}
mkdir -p "$OUT" "$TMP"
exec > >(tee "$OUT/gpu_check.log") 2>&1
T0=$SECONDS
stamp() { echo "-- $1 (t=$((SECONDS - T0)) s)"; }
left() { echo $((BUDGET - (SECONDS - T0))); }
# within CAP CMD...: CMD with a time limit of CAP seconds, or less if the budget is short.
within() {
  local cap=$1 l
  shift
  l=$(($(left) - 3))
  [ "$l" -lt "$cap" ] && cap=$l
  if [ "$cap" -lt 10 ]; then echo "skipped, budget spent: $*" >&2; return 124; fi
  timeout "$cap" "$@"
}

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# GPU memory in use, sampled every 200 ms for the whole script; gpu_peak reports the
# highest sample since a mark (one process runs at a time in steps 2 and 4).
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/gpu_mem.csv" 2>/dev/null &
SMI=$!
gpu_mark() { wc -l < "$OUT/gpu_mem.csv"; }
gpu_peak() { awk -v from="$1" 'NR > from && $1 + 0 > m { m = $1 + 0 } END { print "peak GPU memory: " m + 0 " MiB" }' "$OUT/gpu_mem.csv"; }
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)"
"$BIN" --version
nproc

# Variant name -> environment. Each runs in /tmp/v-NAME, outside any Cargo project, so
# CubeCL's autotune cache (if any) goes to $XDG_CACHE_HOME/cubecl and the trainer's
# kernel cache to $XDG_CACHE_HOME/garment-tagger/kernels: nothing is shared between them.
# fused-stockpatch: fusion on, but Burn's own stem and downsampling convolutions
# (TRAINER_PATCH_CONV=stock) instead of model-core's matrix products, to time that change.
VARIANTS=(fused unfused fused-stockpatch)
venv() {
  local fusion=1 patch=matmul
  case $1 in unfused*) fusion=0 ;; esac
  case $1 in *stockpatch*) patch=stock ;; esac
  echo "TRAINER_CUDA_FUSION=$fusion TRAINER_PATCH_CONV=$patch XDG_CACHE_HOME=/tmp/v-$1/cache"
}
# in_variant NAME CAP ARGS...: the trainer in that variant's folder and environment.
in_variant() {
  local name=$1 cap=$2
  shift 2
  mkdir -p "/tmp/v-$name"
  (cd "/tmp/v-$name" && within "$cap" env $(venv "$name") "$BIN" "$@")
}
SHAPE=(--backbone base --image-size 384 --batch-size 16 --device cuda)

stamp "synthetic data for step 3, in the background (Men Tshirts is trained)"
("$BIN" synth --out /tmp/gpu-data --train-per-category 560 --test-per-category 40 --size 384 --seed 1 \
  > "$TMP/synth.txt" 2>&1) &
SYNTH=$!

stamp "1. warm-up, three variants side by side (at most $WARM s)"
DEADLINE=$((SECONDS + WARM))
PIDS=()
for v in "${VARIANTS[@]}"; do
  (
    in_variant "$v" $((DEADLINE - SECONDS)) bench "${SHAPE[@]}" --train --warmup 2 --seconds 0 --json \
      && in_variant "$v" $((DEADLINE - SECONDS)) bench "${SHAPE[@]}" --warmup 2 --seconds 0 --json \
      && touch "/tmp/v-$v/warm"
  ) > "$TMP/warm-$v.txt" 2>&1 &
  PIDS+=($!)
done
# Beside them, the start-up of the smallest case (atto, 64 px, batch 2, inference).
for v in fused unfused; do
  in_variant "$v-atto" $((DEADLINE - SECONDS)) bench --backbone atto --image-size 64 --batch-size 2 \
    --device cuda --warmup 3 --seconds 1 --json > "$TMP/warm-$v-atto.txt" 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"
for v in fused-atto unfused-atto; do
  echo "[$v] $(venv "$v")"
  cat "$TMP/warm-$v.txt"
done
for v in "${VARIANTS[@]}"; do
  echo "[$v] $(venv "$v") warm: $([ -f /tmp/v-$v/warm ] && echo yes || echo no)"
  cat "$TMP/warm-$v.txt"
done
stamp "warm-up over"

# timed NAME...: inference and a training step for each variant that finished warming.
timed() {
  local v mode r
  for v in "$@"; do
    [ -f "/tmp/v-$v/warm" ] || continue
    for mode in "" --train; do
      m=$(gpu_mark)
      r=$(in_variant "$v" 60 bench "${SHAPE[@]}" $mode --warmup 2 --seconds 4 --json 2>"$TMP/err" | tail -n 1)
      echo "[$v] ${r:-no result}; $(gpu_peak "$m")"
      cat "$TMP/err"
      [ -n "$r" ] && echo "{\"variant\":\"$v\",\"result\":$r}" >> "$OUT/burn.jsonl"
    done
  done
}
stamp "2. timed, one process at a time, from each variant's caches"
timed "${VARIANTS[@]}"
stamp "pytorch eager, 384 px, batch 16"
for mode in "" --train; do
  m=$(gpu_mark)
  within 60 python3 "$REPO/scripts/torch_reference.py" --image-size 384 --batch-size 16 --seconds 4 $mode \
    | tee -a "$OUT/torch.jsonl"
  gpu_peak "$m"
done

# The variant with the fastest timed training step.
BEST=$(python3 - "$OUT/burn.jsonl" <<'EOF'
import json, sys
rows = []
try:
    for line in open(sys.argv[1]):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
except OSError:
    pass
train = [r for r in rows if r["result"]["mode"] == "train"]
print(max(train, key=lambda r: r["result"]["img_per_s"])["variant"] if train else "")
EOF
)
echo "fastest training step: ${BEST:-none}"

if [ -n "$BEST" ]; then
  stamp "3. training on synthetic data: base, 384 px, batch 8, Men Tshirts ($BEST)"
  wait "$SYNTH"
  tail -n 2 "$TMP/synth.txt"
  in_variant "$BEST" 150 train --data /tmp/gpu-data --out /tmp/gpu-run --backbone base --image-size 384 \
    --batch-size 8 --phase1-epochs 4 --phase2-epochs 1 --lr 1e-4 --categories "Men Tshirts" \
    --device cuda --quiet
  cp /tmp/gpu-run/train_log.jsonl "$OUT/base384_train_log.jsonl" 2>/dev/null
  stamp "evaluate and predict on CUDA"
  in_variant "$BEST" 60 evaluate --run /tmp/gpu-run --device cuda
  in_variant "$BEST" 40 predict --run /tmp/gpu-run --category "Men Tshirts" --device cuda \
    /tmp/gpu-data/test_images/000000.jpg /tmp/gpu-data/test_images/000001.jpg

  stamp "4. 512 px, batch 16 ($BEST, then pytorch)"
  for mode in "" --train; do
    m=$(gpu_mark)
    r=$(in_variant "$BEST" 120 bench --backbone base --image-size 512 --batch-size 16 --device cuda $mode \
      --warmup 2 --seconds 4 --json 2>"$TMP/err" | tail -n 1)
    echo "[$BEST 512] ${r:-no result}; $(gpu_peak "$m")"
    cat "$TMP/err"
    [ -n "$r" ] && echo "{\"variant\":\"$BEST\",\"result\":$r}" >> "$OUT/burn.jsonl"
  done
  for mode in "" --train; do
    m=$(gpu_mark)
    within 60 python3 "$REPO/scripts/torch_reference.py" --image-size 512 --batch-size 16 --seconds 4 $mode \
      | tee -a "$OUT/torch.jsonl"
    gpu_peak "$m"
  done
fi
# 5. Where the fastest variant's training step spends its GPU time: every kernel's
# duration under Nsight Compute for the first launches (about two steps at 384 px),
# summed by kernel name.
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -n 1)
if [ -n "$BEST" ] && [ -n "$NCU" ] && [ "$(left)" -gt 110 ]; then
  stamp "5. kernel times of a training step, ncu ($BEST)"
  (cd "/tmp/v-$BEST" && within 100 env $(venv "$BEST") "$NCU" --metrics gpu__time_duration.sum --csv \
    --launch-count 6000 --log-file "$TMP/ncu.csv" "$BIN" bench "${SHAPE[@]}" --train --warmup 1 --seconds 0 \
    --json > /dev/null 2>&1)
  python3 - "$TMP/ncu.csv" <<'EOF'
import collections, csv, re, sys
header, total, count = None, collections.Counter(), collections.Counter()
try:
    for row in csv.reader(open(sys.argv[1])):
        if row and row[0] == "ID":
            header = row
        elif header and len(row) == len(header):
            r = dict(zip(header, row))
            name = re.sub(r"_\d+$", "", r["Kernel Name"])[:70]
            total[name] += float(r["Metric Value"].replace(",", ""))
            count[name] += 1
except OSError as e:
    print("no ncu output:", e)
all_ns = sum(total.values()) or 1.0
print(f"{sum(count.values())} launches, {all_ns / 1e6:.1f} ms of kernel time")
for name, ns in total.most_common(12):
    print(f"{ns / 1e6:9.2f} ms {100 * ns / all_ns:5.1f} % {count[name]:5d}  {name}")
EOF
fi
kill "$SYNTH" "$SMI" 2>/dev/null
stamp "done"
