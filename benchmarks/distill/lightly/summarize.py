"""Rows and the results table of run_side_by_side.sh (runs in this repo's venv; LightlyTrain's rows come as JSON).

pocus-row: per-step seconds from `pocus distill`'s metrics.jsonl (batch / images_per_s, end of one step to the end
of the next, data wait included); lightly-row: the JSON line lightly_run.py printed; table: images/s of each run
(batch / mean of the timed steps), each tool's mean over its runs, and the ratio pocus / LightlyTrain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path


def pocus_row(args: argparse.Namespace) -> dict:
    import torch

    import pocus_edge

    rows = [json.loads(x) for x in Path(args.metrics).read_text().splitlines() if x.strip()]
    steps = [args.batch / r["images_per_s"] for r in rows if "loss" in r]
    return {"tool": "pocus distill", "version": getattr(pocus_edge, "__version__", "?"), "torch": torch.__version__,
            "round": args.round, "batch_size": args.batch, "image_size": args.size, "step_seconds": steps,
            "wall_seconds": round(float(args.end) - float(args.start), 2)}


def images_per_s(row: dict, warmup: int) -> float:
    timed = row["step_seconds"][warmup:]
    if not timed:
        raise SystemExit(f"{row['tool']} round {row['round']}: no step after the {warmup} warm-up steps was timed")
    return row["batch_size"] / statistics.mean(timed)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(x) for x in Path(args.results).read_text().splitlines() if x.strip()]
    rates = {"pocus distill": [], "lightly-train": []}
    print(f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, {cpu_model()}, "
          f"{len(os.sched_getaffinity(0))} CPU cores (shared with other jobs), no GPU; load average at the end: "
          f"{os.getloadavg()[0]:.1f}")
    versions = {r["tool"]: f"{r['tool']} {r.get('version')} (torch {r.get('torch')})" for r in rows}
    print(f"- Versions: {'; '.join(versions.values())}; python {sys.version.split()[0]}")
    print(f"- {args.frames} lung frames, first {args.warmup} steps of each run not timed; image size "
          f"{rows[0].get('image_size', '')} batch {rows[0]['batch_size']}\n")
    print("| round | tool | timed steps (s) | images/s | whole command (s) |")
    print("|---:|---|---|---:|---:|")
    for row in rows:
        rate = images_per_s(row, args.warmup)
        rates[row["tool"]].append(rate)
        steps = ", ".join(f"{s:.1f}" for s in row["step_seconds"][args.warmup:])
        print(f"| {row['round']} | {row['tool']} | {steps} | {rate:.3f} | {row.get('wall_seconds', '')} |")
    ours, theirs = statistics.mean(rates["pocus distill"]), statistics.mean(rates["lightly-train"])
    per_round = [a / b for a, b in zip(rates["pocus distill"], rates["lightly-train"], strict=False)]
    print(f"\nMean images/s: pocus distill {ours:.3f}, LightlyTrain {theirs:.3f}; ratio pocus / LightlyTrain "
          f"{ours / theirs:.2f}x (per round: {', '.join(f'{r:.2f}x' for r in per_round)}; goal >= 1.0x)")
    lightly = subprocess.run([args.lightly_py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    wanted = {"lightly-train", "torch", "timm", "pytorch-lightning", "torchvision"}
    pins = [x for x in lightly.splitlines() if x.split("==")[0].lower().replace("_", "-") in wanted]
    print(f"\nLightlyTrain venv ({args.lightly_py}): {', '.join(pins)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pocus-row")
    p.add_argument("metrics")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p = sub.add_parser("lightly-row")
    p.add_argument("--round", type=int, required=True)
    p = sub.add_parser("table")
    p.add_argument("results")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--lightly-py", default="/work/lightly-venv/bin/python")
    args = parser.parse_args()
    if args.command == "pocus-row":
        print(json.dumps(pocus_row(args)))
    elif args.command == "lightly-row":
        print(json.dumps({**json.loads(sys.stdin.read().strip().splitlines()[-1]), "round": args.round}))
    else:
        table(args)


if __name__ == "__main__":
    main()
