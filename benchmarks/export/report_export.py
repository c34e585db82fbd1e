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


def _relaxed(bundle: Path) -> bool:
    """True when the export was run with thresholds looser than the defaults for its precision."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pocus_edge.export.parity import thresholds_for

    used = json.loads((bundle / "parity.json").read_text())["thresholds"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    defaults = thresholds_for(manifest["task"], manifest["precision"])
    return any(used[k][1] != defaults[k][1] for k in used)


def main(results: Path) -> None:
    lat_path = next((p for p in (results / "latency.json", results.parent / "latency.json") if p.is_file()), None)
    latency = json.loads(lat_path.read_text())["rows"] if lat_path else []
    p50 = {(Path(r["bundle"]).name, r["threads"]): r["latency_ms"]["p50"] for r in latency if r["bundle"]}
    print("| model | target | precision | size MB | × fp32 size | parity | metric | p50 ms @1 thr | p50 ms @2 thr |")
    print("|---|---|---|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for path in results.glob("*-onnx-fp32.json"):
        manifest = json.loads(path.read_text())
        if not manifest.get("failed"):
            base[path.stem.rsplit("-", 2)[0]] = size_mb(manifest)
    for path in sorted(results.glob("*.json")):
        if path.name == "latency.json":
            continue
        manifest = json.loads(path.read_text())
        name = path.stem
        if manifest.get("failed"):
            err = [line for line in (results / f"{name}.err").read_text().splitlines() if line.startswith("error")]
            detail = err[-1].split(": ", 2)[-1].split(". Nothing")[0] if err else "see .err"
            model, target, precision = name.rsplit("-", 2)
            print(f"| {model} | {target} | {precision} | - | - | failed | {detail} | - | - |")
            continue
        size = size_mb(manifest)
        model = name.rsplit("-", 2)[0]
        parity = manifest["parity"]
        key, _, second = KEY_METRIC[manifest["task"]]
        metrics = parity.get("metrics", {})
        metric = (f"{metrics[key]:.4f} / {metrics[second]:.4f}" if metrics else "Linux: converted + spec checked")
        if parity["status"] == "passed" and _relaxed(Path(manifest["bundle"])):
            parity = {**parity, "status": "passed (relaxed thresholds)"}
        ratio = f"{size / base[model]:.3f}" if model in base else "-"
        lat1, lat2 = p50.get((name, 1)), p50.get((name, 2))
        print(f"| {model} | {manifest['target']} | {manifest['precision']} | {size:.1f} | {ratio} | "
              f"{parity['status']} | {metric} | {f'{lat1:.1f}' if lat1 else '-'} | {f'{lat2:.1f}' if lat2 else '-'} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
