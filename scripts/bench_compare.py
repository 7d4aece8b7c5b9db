"""Ours against PyTorch on the same machine, shape by shape.

For every shape it runs `trainer bench --json` and `scripts/torch_reference.py`
(timm's ConvNeXt plus the same heads) one after the other, `--rounds` times, keeps the
best throughput of each, and prints a Markdown table with the ratio ours / PyTorch and
both peak memories. One process per measurement, so peak memory is per shape.

Usage:
    python3 scripts/bench_compare.py [--trainer target/release/trainer] [--device cpu]
        [--rounds 2] [--seconds 5] [--shapes atto:224:1:inference,...] [--jsonl FILE]

A shape is BACKBONE:SIZE:BATCH:MODE with MODE `inference` or `train`. The default set is
the one of BENCHMARKS.md: atto and tiny at 224, base at 384 and 512, batch 1 and 8,
inference, and a training step for atto and tiny at 224, batch 8. Without torch and
timm, only our numbers are printed.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_SHAPES = [
    f"{b}:{s}:{n}:inference"
    for b, s in [("atto", 224), ("tiny", 224), ("base", 384), ("base", 512)]
    for n in (1, 8)
] + ["atto:224:8:train", "tiny:224:8:train"]

HERE = Path(__file__).resolve().parent


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}\n")
        return None
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def have_torch():
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", default="target/release/trainer")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES))
    p.add_argument("--jsonl", help="also append every measurement to this file")
    args = p.parse_args()
    torch_ok = have_torch()
    if not torch_ok:
        print("torch and timm not importable: printing our numbers only", file=sys.stderr)

    rows = []
    for shape in args.shapes.split(","):
        backbone, size, batch, mode = shape.split(":")
        ours_cmd = [args.trainer, "bench", "--backbone", backbone, "--image-size", size,
                    "--batch-size", batch, "--device", args.device,
                    "--seconds", str(args.seconds), "--json"]
        torch_cmd = [sys.executable, str(HERE / "torch_reference.py"),
                     "--backbone", f"convnext_{backbone}", "--image-size", size,
                     "--batch-size", batch, "--device", args.device,
                     "--seconds", str(args.seconds)]
        if mode == "train":
            ours_cmd.append("--train")
            torch_cmd.append("--train")
        best = {"ours": None, "torch": None}
        for _ in range(args.rounds):
            for who, cmd in (("ours", ours_cmd), ("torch", torch_cmd)):
                if who == "torch" and not torch_ok:
                    continue
                r = run_json(cmd)
                if r is None:
                    continue
                r["who"] = who
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
                if best[who] is None or r["img_per_s"] > best[who]["img_per_s"]:
                    best[who] = r
        rows.append((shape, best["ours"], best["torch"]))
        o, t = best["ours"], best["torch"]
        print(f"{shape}: ours {o and round(o['img_per_s'], 2)} img/s, "
              f"torch {t and round(t['img_per_s'], 2)} img/s", file=sys.stderr, flush=True)

    mib = lambda r, k: f"{r[k] / 2**20:.0f}" if r and r.get(k) else "-"
    ips = lambda r: f"{r['img_per_s']:.2f}" if r else "-"
    print("| backbone | size | batch | mode | ours img/s | PyTorch img/s | ratio | ours peak MiB | PyTorch peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape, o, t in rows:
        b, s, n, m = shape.split(":")
        ratio = f"{o['img_per_s'] / t['img_per_s']:.2f}" if o and t else "-"
        print(f"| {b} | {s} | {n} | {m} | {ips(o)} | {ips(t)} | {ratio} | "
              f"{mib(o, 'peak_rss_bytes')} | {mib(t, 'peak_rss_bytes')} |")


if __name__ == "__main__":
    main()
