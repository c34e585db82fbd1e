"""Render benchmarks/export/results (export manifests + latency rows) as the Markdown in README.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEY_METRIC = {"segmentation": ("dice_mean", "mask Dice agreement (mean / min)", "dice_min"),
              "classification": ("top1_agreement", "top-1 agreement (max |Δp|)", "prob_abs_diff_max"),
              "embedding": ("cosine_mean", "cosine (mean / min)", "cosine_min")}


def size_mb(manifest: dict) -> float:
    path = Path(manifest["bundle"]) / manifest["model_file"]
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main(results: Path) -> None:
    latency = json.loads((results / "latency.json").read_text())["rows"] if (results / "latency.json").is_file() \
        else []
    p50 = {(Path(r["bundle"]).name, r["threads"]): r["latency_ms"]["p50"] for r in latency}
    print("| model | target | precision | size MB | × fp32 size | parity | metric | p50 ms @1 thr | p50 ms @2 thr |")
    print("|---|---|---|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for path in results.glob("*-onnx-fp32.json"):
        manifest = json.loads(path.read_text())
        if not manifest.get("failed"):
            base[path.stem.split("-")[0]] = size_mb(manifest)
    for path in sorted(results.glob("*.json")):
        if path.name == "latency.json":
            continue
        manifest = json.loads(path.read_text())
        name = path.stem
        if manifest.get("failed"):
            err = (results / f"{name}.err").read_text().strip().splitlines()
            print(f"| {name} | | | | | failed | {err[-1] if err else ''} | | |")
            continue
        size = size_mb(manifest)
        model = name.split("-")[0]
        parity = manifest["parity"]
        key, _, second = KEY_METRIC[manifest["task"]]
        metrics = parity.get("metrics", {})
        metric = (f"{metrics[key]:.4f} / {metrics[second]:.4f}" if metrics else parity.get("reason", "")[:60])
        ratio = f"{size / base[model]:.3f}" if model in base else "-"
        lat1, lat2 = p50.get((name, 1)), p50.get((name, 2))
        print(f"| {model} | {manifest['target']} | {manifest['precision']} | {size:.1f} | {ratio} | "
              f"{parity['status']} | {metric} | {f'{lat1:.1f}' if lat1 else '-'} | {f'{lat2:.1f}' if lat2 else '-'} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
