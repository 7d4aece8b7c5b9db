#!/usr/bin/env bash
# Where a CUDA process of the trainer spends its start-up: the smallest case (atto,
# 64 px, batch 2, inference) with and without kernel fusion and with minimal autotuning,
# watched from outside every 20 s (CPU time, threads, CubeCL's compilation log) and
# with its threads' stacks taken twice through cuda-gdb. Carry the unstripped release
# binary in gpu-bin/trainer.xz so the stacks have names.
set -uo pipefail
BIN=${BIN:-gpu-bin/trainer}
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then xz -dkf "$BIN.xz" && chmod +x "$BIN"; fi
BIN=$(realpath "$BIN")
OUT=${OUT:-/tmp/gpu-diag-out}
WATCH=${WATCH:-240}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_diag.log") 2>&1
T0=$SECONDS
stamp() { echo "-- $1 (t=$((SECONDS - T0)) s)"; }

stamp "machine"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
ldconfig -p | grep -i -E "nvrtc|libcuda\." | head -5
ls -d /usr/local/cuda*/ 2>/dev/null

declare -A PID
start() {
  local name=$1
  shift
  mkdir -p "/tmp/d-$name"
  (cd "/tmp/d-$name" && env XDG_CACHE_HOME="/tmp/d-$name/cache" CUBECL_DEBUG_LOG="/tmp/d-$name.log" "$@" \
    "$BIN" bench --backbone atto --image-size 64 --batch-size 2 --device "${DEV:-cuda}" --warmup 3 --seconds "${SECS:-1}" --json \
    > "/tmp/d-$name.out" 2>&1) &
  PID[$name]=$!
}
start unfused TRAINER_CUDA_FUSION=0
start fused TRAINER_CUDA_FUSION=1
start unfused-min TRAINER_CUDA_FUSION=0 CUBECL_AUTOTUNE_LEVEL=minimal

# The trainer process of a case, found by its environment.
report() {
  local name p
  for name in unfused fused unfused-min; do
    p=$(pgrep -f "$BIN bench" | while read -r q; do
      grep -qz "XDG_CACHE_HOME=/tmp/d-$name/cache" "/proc/$q/environ" 2>/dev/null && echo "$q"; done | head -1)
    if [ -z "$p" ]; then
      echo "[$name] finished: $(tr '\n' ' ' < "/tmp/d-$name.out" | cut -c1-400)"
      continue
    fi
    read -r -a st < "/proc/$p/stat"
    echo "[$name] pid $p cpu $(((st[13] + st[14]) / 100)) s, threads $(ls /proc/$p/task | wc -l)," \
      "log lines $(wc -l < "/tmp/d-$name.log" 2>/dev/null), out: $(tr '\n' ' ' < "/tmp/d-$name.out" | cut -c1-200)"
    for t in /proc/$p/task/*; do
      read -r -a ts < "$t/stat"
      echo "    thread $(cat "$t/comm") state ${ts[2]} cpu $(((ts[13] + ts[14]) / 100)) s wchan $(cat "$t/wchan" 2>/dev/null)"
    done | sort -k6 -n -r | head -4
    echo "    log tail: $(tail -c 300 "/tmp/d-$name.log" 2>/dev/null | tr '\n' ' ')"
  done
}
stacks() {
  local p
  p=$(pgrep -f "$BIN bench" | while read -r q; do
    grep -qz "XDG_CACHE_HOME=/tmp/d-unfused/cache" "/proc/$q/environ" 2>/dev/null && echo "$q"; done | head -1)
  [ -n "$p" ] || { echo "no process to take stacks of"; return; }
  timeout 90 cuda-gdb -p "$p" -batch -ex "set pagination off" -ex "thread apply all bt 25" \
    > "$OUT/stacks-$1.txt" 2>&1
  echo "stacks of pid $p written ($(wc -l < "$OUT/stacks-$1.txt") lines); the busiest frames:"
  grep -E "^#[0-9]+ " "$OUT/stacks-$1.txt" | sed -E 's/^#[0-9]+ +(0x[0-9a-f]+ in )?//' | cut -c1-150 \
    | sort | uniq -c | sort -rn | head -25
}

for i in $(seq 1 $((WATCH / 20))); do
  sleep 20
  stamp "watch $i"
  report
  if [ "$i" = 2 ]; then stacks early; fi
  if [ "$i" = 7 ]; then stacks late; fi
done
stamp "stopping"
pkill -f "$BIN bench"
for name in unfused fused unfused-min; do
  grep -c -i "compil" "/tmp/d-$name.log" 2>/dev/null
  xz -T4 -c "/tmp/d-$name.log" > "$OUT/cubecl-$name.log.xz" 2>/dev/null
done
ls -la "$OUT"
stamp "done"
