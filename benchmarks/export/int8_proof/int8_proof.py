"""Helpers of run_int8_proof.sh: split folders for calibration/parity, and the proof table.

  int8_proof.py splits SPLITS_CSV DATA OUT   # OUT/hc18-train, OUT/hc18-val: the run's train / val images
  int8_proof.py table PROOF_DIR DEST         # DEST/results.json + results.md from the bundles, evals and latency run
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

SPEEDUP_GOAL = 2.5
AGREEMENT_GOAL = 0.98
MODELS = {"r50": "HC18 U-Net-ResNet50 (teacher, kd/runs/hc18-teacher-r50-s0)",
          "mnv3": "HC18 U-Net-MobileNetV3-Large (kd student, kd/runs/hc18-mobilenetv3_large_100-kd-s0)"}
ROWS = [("onnx-fp32", "fp32 ONNX (reference)"), ("onnx-int8", "full int8 ONNX"),
        ("onnx-int8-mixed", "mixed int8 ONNX (automatic, target 0.98)"),
        ("onnx-int8-mixed-strict", "mixed int8 ONNX (automatic, target 0.997)"),
        ("onnx-int8-mixed-mid", "mixed int8 ONNX (automatic, target 0.988)"), ("tflite-int8", "full int8 TFLite"),
        ("tflite-int8-mixed", "mixed int8 TFLite"), ("qat-onnx-int8", "QAT -> int8 ONNX"),
        ("qat-tflite-int8", "QAT -> int8 TFLite")]


def splits(splits_csv: Path, data: Path, out: Path) -> None:
    """Copy the train and val images of a fine-tune's splits.csv (never test) into OUT/hc18-{train,val}."""
    by_name = {Path(r["image"]).name: r["split"] for r in csv.DictReader(splits_csv.open())}
    rows = list(csv.DictReader((data / "manifest.csv").open()))
    for split in ("train", "val"):
        dest = out / f"hc18-{split}"
        keep = [r for r in rows if by_name.get(Path(r["file"]).name) == split]
        for r in keep:
            for col in ("file", "mask"):
                (dest / r[col]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data / r[col], dest / r[col])
        with (dest / "manifest.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(keep)
        print(f"{dest}: {len(keep)} {split} images")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _row(proof: Path, model: str, key: str, latency: dict[str, dict]) -> dict:
    name = f"{model}-{key}"
    bundle = proof / "bundles" / name
    row: dict = {"bundle": name}
    manifest = _load(bundle / "manifest.json")
    qat_failed = proof / "results" / f"{model}-qat.failed"
    if manifest is None and key.startswith("qat-") and qat_failed.is_file():
        row["status"] = f"not built: pocus qat failed: {qat_failed.read_text().strip()}"
        return row
    if manifest is None:
        err = proof / "results" / f"{name}.err"
        lines = [ln for ln in err.read_text().splitlines() if ln.strip()] if err.is_file() else []
        row["status"] = "not built: " + (lines[-1] if lines else "not run")
        return row
    parity = _load(bundle / "parity.json") or {}
    m = parity.get("metrics", {})
    opts = manifest.get("target_options", {})
    mixed = opts.get("mixed_precision", {})
    row.update(status=f"parity {parity.get('status')}", parity_frames=parity.get("images"),
               parity_data=parity.get("data"),
               dice_agreement_mean=m.get("dice_mean"), dice_agreement_min=m.get("dice_min"),
               calibration_method=opts.get("calibration_method"), calibration_images=opts.get("calibration_images"),
               float_layers=opts.get("float_layers"), float_layer_modules=opts.get("float_layer_modules"),
               mixed_precision=mixed or None,
               size_mb=round(sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 1e6, 2),
               model_file_mb=round((bundle / manifest["model_file"]).stat().st_size / 1e6, 2))
    ev = _load(proof / "eval" / f"{name}.json")
    if ev is not None:
        s = ev.get("metrics", {})
        row["test_dice"], row["test_images"] = s.get("dice"), s.get("images", s.get("n"))
    lat = latency.get(name)
    if lat is not None:
        row["p50_ms_1thread"] = lat["p50_ms"]
        row["cv"] = lat.get("cv")
    return row


def _latency_rows(path: Path) -> dict[str, dict]:
    data = _load(path)
    if data is None:
        return {}
    rows = data if isinstance(data, list) else data.get("rows", data.get("results", []))
    out = {}
    for r in rows:
        p50 = (r.get("latency_ms") or {}).get("p50", r.get("p50_ms"))  # bench row schema, or the older flat row
        if int(r.get("threads", 1)) == 1 and p50 is not None:
            out[Path(r["bundle"]).name] = {"p50_ms": p50, "cv": r.get("cv"), "runs": r.get("runs")}
    return out


def table(proof: Path, dest: Path) -> None:
    latency = _latency_rows(proof / "latency.json")
    result: dict = {"goals": {"dice_agreement_min_mean": AGREEMENT_GOAL, "speedup_vs_fp32_onnx_1thread": SPEEDUP_GOAL},
                    "models": {}}
    md = []
    for model, title in MODELS.items():
        rows = [{"row": label, **_row(proof, model, key, latency)} for key, label in ROWS]
        rows = [r for r in rows if r["status"] != "not built: not run"]  # rows made for one model only
        ref = next(r for r in rows if r["bundle"].endswith("onnx-fp32"))
        for r in rows:
            if r.get("p50_ms_1thread") and ref.get("p50_ms_1thread"):
                r["speedup_vs_fp32_onnx"] = round(ref["p50_ms_1thread"] / r["p50_ms_1thread"], 2)
            if "int8" in r["bundle"] and r.get("dice_agreement_mean") is not None:
                r["agreement_goal_met"] = r["dice_agreement_mean"] >= AGREEMENT_GOAL
                r["speed_goal_met"] = r.get("speedup_vs_fp32_onnx", 0) >= SPEEDUP_GOAL
        qat = _load(proof / "qat" / model / "metrics.json")
        result["models"][model] = {"title": title, "rows": rows, "qat": qat and {
            k: qat.get(k) for k in ("qat", "train_images", "wall_time_s", "history", "test")}}
        md += [f"### {title}", "",
               "| row | Dice agreement with fp32 (mean / min, frames) | test Dice | p50 ms @1 thr | × fp32 ONNX "
               "| bundle MB | float layers | goals (≥0.98, ≥2.5×) |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            md.append(_md_row(r))
        md.append("")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (dest / "results.md").write_text("\n".join(md))
    print("\n".join(md))


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _md_row(r: dict) -> str:
    if "dice_agreement_mean" not in r:
        status = r["status"] if len(r["status"]) < 240 else r["status"][:237] + "..."  # results.json: in full
        return f"| {r['row']} | {status} | - | - | - | - | - | - |"
    agree = f"{_fmt(r['dice_agreement_mean'])} / {_fmt(r['dice_agreement_min'])} ({r['parity_frames']})"
    floats = ", ".join(f"`{n}`" for n in (r.get("float_layers") or [])) or "none"
    goals = "-"
    if "agreement_goal_met" in r:
        goals = f"{'met' if r['agreement_goal_met'] else 'NOT met'}, {'met' if r['speed_goal_met'] else 'NOT met'}"
    return (f"| {r['row']} | {agree} | {_fmt(r.get('test_dice'))} | {_fmt(r.get('p50_ms_1thread'), '.1f')} | "
            f"{_fmt(r.get('speedup_vs_fp32_onnx'), '.2f')} | {r['size_mb']:.1f} | {floats} | {goals} |")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "splits":
        splits(Path(args[0]), Path(args[1]), Path(args[2]))
    elif cmd == "table":
        table(Path(args[0]), Path(args[1]))
    else:
        sys.exit(__doc__)
