"""Helpers of run_int8_proof.sh: split folders for calibration/parity, and the proof table.

  int8_proof.py splits SPLITS_CSV DATA OUT [PREFIX]  # OUT/PREFIX-train, OUT/PREFIX-val (PREFIX default hc18): the
                                                     # run's train / val images, never its test images
  int8_proof.py table PROOF_DIR DEST                 # DEST/results.json + results.md from bundles, evals, latency runs
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

SEG, CLS = "segmentation", "classification"
SPEEDUP_GOAL = 2.5
AGREEMENT_GOAL = 0.98  # segmentation: mean mask Dice agreement with fp32
TOP1_GOAL = 0.99  # classification: top-1 agreement with fp32
# task -> (the parity.json metric an int8 row is judged on, its goal)
GOAL = {SEG: ("dice_agreement_mean", AGREEMENT_GOAL), CLS: ("top1_agreement", TOP1_GOAL)}
MODELS = {"r50": ("HC18 U-Net-ResNet50 (teacher, kd/runs/hc18-teacher-r50-s0)", SEG),
          "mnv3": ("HC18 U-Net-MobileNetV3-Large (kd student, kd/runs/hc18-mobilenetv3_large_100-kd-s0)", SEG),
          "busi-r50": ("BUSI U-Net-ResNet50 (int8_proof/runs/busi-seg-r50-s0)", SEG),
          "busi-cls": ("BUSI ResNet-50 classifier (int8_proof/runs/busi-cls-r50-s0)", CLS),
          "busi-r50-long": ("BUSI U-Net-ResNet50, 20 epochs (int8_proof/runs/busi-seg-r50-long-s0)", SEG),
          "busi-cls-long": ("BUSI ResNet-50 classifier, 20 epochs (int8_proof/runs/busi-cls-r50-long-s0)", CLS)}
ROWS = {SEG: [("onnx-fp32", "fp32 ONNX (reference)"), ("onnx-int8", "full int8 ONNX"),
              ("onnx-int8-mixed", "mixed int8 ONNX (automatic, target 0.98)"),
              ("onnx-int8-mixed-strict", "mixed int8 ONNX (automatic, target 0.997)"),
              ("onnx-int8-mixed-mid", "mixed int8 ONNX (automatic, target 0.988)"),
              ("onnx-int8-mixed-more", "mixed int8 ONNX (automatic, target 0.98, up to 10 float layers)"),
              ("tflite-int8", "full int8 TFLite"),
              ("tflite-int8-mixed", "mixed int8 TFLite"), ("qat-onnx-int8", "QAT -> int8 ONNX"),
              ("qat-tflite-int8", "QAT -> int8 TFLite"),
              ("onnx-int8-unchecked", "full int8 ONNX, parity thresholds 0 (for latency)"),
              ("tflite-int8-unchecked", "full int8 TFLite, parity thresholds 0 (for latency)"),
              ("onnx-int8-auto", "mixed int8 ONNX, --calib-method auto, target 0.98")],
        CLS: [("onnx-fp32", "fp32 ONNX (reference)"), ("onnx-int8", "full int8 ONNX"),
              ("onnx-int8-mixed", "mixed int8 ONNX (automatic, target 0.99)"),
              ("onnx-int8-mixed-more", "mixed int8 ONNX (automatic, target 0.99, up to 10 float layers)"),
              ("tflite-int8", "full int8 TFLite"),
              ("tflite-int8-mixed", "mixed int8 TFLite (automatic, target 0.99)"),
              ("qat-onnx-int8", "QAT -> int8 ONNX"), ("qat-tflite-int8", "QAT -> int8 TFLite"),
              ("onnx-int8-unchecked", "full int8 ONNX, parity thresholds 0 (for latency)"),
              ("tflite-int8-unchecked", "full int8 TFLite, parity thresholds 0 (for latency)"),
              ("onnx-int8-auto", "mixed int8 ONNX, --calib-method auto, target 0.99")]}
HEADER = {SEG: "| row | Dice agreement with fp32 (mean / min, frames) | test Dice | p50 ms @1 thr | × fp32 ONNX "
               f"| bundle MB | float layers | goals (≥{AGREEMENT_GOAL}, ≥{SPEEDUP_GOAL}×) |",
          CLS: "| row | top-1 agreement with fp32 (frames), max abs Δprob | test accuracy / macro-F1 | p50 ms @1 thr "
               f"| × fp32 ONNX | bundle MB | float layers | goals (≥{TOP1_GOAL}, ≥{SPEEDUP_GOAL}×) |"}
# one interleaved call per dataset (run_int8_proof.sh)
LATENCY_RUNS = ("latency.json", "latency-busi.json", "latency-busi-long.json")


def splits(splits_csv: Path, data: Path, out: Path, prefix: str = "hc18") -> None:
    """Copy the train and val images (and masks) of a fine-tune's splits.csv, never test, into OUT/PREFIX-{train,val}.

    Exits naming the file when a split is empty or an image of splits.csv is not in DATA's manifest.csv."""
    listed = list(csv.DictReader(splits_csv.open()))
    by_name = {Path(r["image"]).name: r["split"] for r in listed}
    rows = list(csv.DictReader((data / "manifest.csv").open()))
    for split in ("train", "val"):
        dest = out / f"{prefix}-{split}"
        keep = [r for r in rows if by_name.get(Path(r["file"]).name) == split]
        expected = sum(r["split"] == split for r in listed)
        if not keep or len(keep) != expected:
            sys.exit(f"{splits_csv}: {expected} {split} images listed, {len(keep)} of them found in "
                     f"{data / 'manifest.csv'}; pass the DATA folder the run was trained on")
        for r in keep:
            for col in ("file", "mask"):
                if r.get(col):
                    (dest / r[col]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(data / r[col], dest / r[col])
        with (dest / "manifest.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(keep)
        print(f"{dest}: {len(keep)} {split} images")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _last_line(path: Path) -> str | None:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
    return lines[-1] if lines else None


def _agreement(task: str, m: dict) -> dict:
    """The parity.json metrics of a row, named for the table."""
    if task == CLS:
        return {"top1_agreement": m.get("top1_agreement"), "prob_abs_diff_max": m.get("prob_abs_diff_max")}
    return {"dice_agreement_mean": m.get("dice_mean"), "dice_agreement_min": m.get("dice_min")}


def _test_metrics(task: str, ev: dict) -> dict:
    """Ground-truth metrics of `pocus eval --split test` (eval.json's metrics block)."""
    s = ev.get("metrics", {})
    images = s.get("images", s.get("n"))
    if task == CLS:
        return {"test_accuracy": s.get("accuracy"), "test_macro_f1": s.get("macro_f1"), "test_images": images}
    return {"test_dice": s.get("dice"), "test_images": images}


def _not_built(proof: Path, model: str, key: str) -> str:
    """Why a row has no bundle: its model's QAT failed, its export failed, or it was not run."""
    results = proof / "results"
    qat_failed = results / f"{model}-qat.failed"
    if key.startswith("qat-") and qat_failed.is_file():
        return f"not built: pocus qat failed: {qat_failed.read_text().strip()}"
    return "not built: " + (_last_line(results / f"{model}-{key}.err") or "not run")


def _row(proof: Path, model: str, key: str, latency: dict[str, dict]) -> dict:
    task = MODELS[model][1]
    name = f"{model}-{key}"
    bundle = proof / "bundles" / name
    row: dict = {"bundle": name}
    manifest = _load(bundle / "manifest.json")
    if manifest is None:
        row["status"] = _not_built(proof, model, key)
        return row
    parity = _load(bundle / "parity.json") or {}
    opts = manifest.get("target_options", {})
    mixed = opts.get("mixed_precision", {})
    row.update(status=f"parity {parity.get('status')}", parity_frames=parity.get("images"),
               parity_data=parity.get("data"), **_agreement(task, parity.get("metrics", {})),
               calibration_method=opts.get("calibration_method"), calibration_images=opts.get("calibration_images"),
               float_layers=opts.get("float_layers"), float_layer_modules=opts.get("float_layer_modules"),
               mixed_precision=mixed or None,
               size_mb=round(sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 1e6, 2),
               model_file_mb=round((bundle / manifest["model_file"]).stat().st_size / 1e6, 2))
    ev = _load(proof / "eval" / f"{name}.json")
    if ev is not None:
        row.update(_test_metrics(task, ev))
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


def _goals(task: str, rows: list[dict]) -> None:
    """Speed-up against the model's fp32 ONNX row (same latency call) and, for int8 rows, the issue's two goals."""
    metric, goal = GOAL[task]
    ref = next((r for r in rows if r["bundle"].endswith("onnx-fp32")), {})
    for r in rows:
        if r.get("p50_ms_1thread") and ref.get("p50_ms_1thread"):
            r["speedup_vs_fp32_onnx"] = round(ref["p50_ms_1thread"] / r["p50_ms_1thread"], 2)
        if "int8" in r["bundle"] and r.get(metric) is not None:
            r["agreement_goal_met"] = r[metric] >= goal
            r["speed_goal_met"] = r.get("speedup_vs_fp32_onnx", 0) >= SPEEDUP_GOAL


def table(proof: Path, dest: Path) -> None:
    latency = {k: v for run in LATENCY_RUNS for k, v in _latency_rows(proof / run).items()}
    result: dict = {"goals": {"dice_agreement_min_mean": AGREEMENT_GOAL, "speedup_vs_fp32_onnx_1thread": SPEEDUP_GOAL},
                    "models": {}}
    md = []
    for model, (title, task) in MODELS.items():
        train_failed = proof / "results" / f"{model}-train.failed"  # run_int8_proof.sh trains the BUSI models
        if train_failed.is_file():
            rows = [{"row": "every row", "bundle": f"{model}-*",
                     "status": f"not built: pocus finetune failed: {train_failed.read_text().strip()}"}]
        else:
            rows = [{"row": label, **_row(proof, model, key, latency)} for key, label in ROWS[task]]
            rows = [r for r in rows if r["status"] != "not built: not run"]  # rows made for some models only
        if not rows:
            print(f"{model}: nothing built or failed under {proof}; its section is left out", file=sys.stderr)
            continue
        if task == CLS:
            result["goals"]["top1_agreement_min"] = TOP1_GOAL
        _goals(task, rows)
        qat = _load(proof / "qat" / model / "metrics.json")
        result["models"][model] = {"title": title, "task": task, "rows": rows, "qat": qat and {
            k: qat.get(k) for k in ("qat", "train_images", "wall_time_s", "history", "test")}}
        md += [f"### {title}", "", HEADER[task], "|---|---|---|---|---|---|---|---|"]
        md += [_md_row(task, r) for r in rows]
        md.append("")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (dest / "results.md").write_text("\n".join(md))
    print("\n".join(md))


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _md_row(task: str, r: dict) -> str:
    if "parity_frames" not in r:  # not built
        status = r["status"] if len(r["status"]) < 240 else r["status"][:237] + "..."  # results.json: in full
        return f"| {r['row']} | {status} | - | - | - | - | - | - |"
    if task == CLS:
        agree = f"{_fmt(r['top1_agreement'])} ({r['parity_frames']}), {_fmt(r['prob_abs_diff_max'])}"
        test = f"{_fmt(r.get('test_accuracy'))} / {_fmt(r.get('test_macro_f1'))}"
    else:
        agree = f"{_fmt(r['dice_agreement_mean'])} / {_fmt(r['dice_agreement_min'])} ({r['parity_frames']})"
        test = _fmt(r.get("test_dice"))
    floats = ", ".join(f"`{n}`" for n in (r.get("float_layers") or [])) or "none"
    goals = "-"
    if "agreement_goal_met" in r:
        goals = f"{'met' if r['agreement_goal_met'] else 'NOT met'}, {'met' if r['speed_goal_met'] else 'NOT met'}"
    return (f"| {r['row']} | {agree} | {test} | {_fmt(r.get('p50_ms_1thread'), '.1f')} | "
            f"{_fmt(r.get('speedup_vs_fp32_onnx'), '.2f')} | {r['size_mb']:.1f} | {floats} | {goals} |")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or [""]
    if cmd == "splits" and len(args) in (3, 4):
        splits(Path(args[0]), Path(args[1]), Path(args[2]), *args[3:])
    elif cmd == "table" and len(args) == 2:
        table(Path(args[0]), Path(args[1]))
    else:
        sys.exit(__doc__)
