#!/usr/bin/env bash
# Where Burn's CUDA start-up time goes: the same tiny and base measurements with
# autotuning at its minimal level, wall-clocked, with CubeCL's compilation log counted.
set -uo pipefail
BIN=${BIN:-gpu-bin/trainer}
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then xz -dkf "$BIN.xz" && chmod +x "$BIN"; fi
OUT=${OUT:-/tmp/gpu-diag-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_diag.log") 2>&1
for spec in "atto 64 2 minimal default" "base 384 16 minimal"; do
  set -- $spec
  for level in "${@:4}"; do
    log=/tmp/cubecl-$1-$level.log
    start=$SECONDS
    if [ $level = minimal ]; then export CUBECL_AUTOTUNE_LEVEL=minimal; else unset CUBECL_AUTOTUNE_LEVEL; fi
    CUBECL_DEBUG_LOG=$log timeout 50 "$BIN" bench --backbone $1 --image-size $2 --batch-size $3 \
      --device cuda --seconds 2 --json
    echo "$1 $2 px b$3 autotune=$level: rc=$? wall $((SECONDS - start)) s;" \
      "log lines $(wc -l < $log 2>/dev/null)"
    grep -i -c "compil" $log 2>/dev/null
    grep -i "autotune" $log 2>/dev/null | head -3 | cut -c1-200
  done
done
