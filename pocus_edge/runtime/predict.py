"""`pocus predict`: run a bundle on image files or a video and write masks, overlays and a JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PocusError
from ..io import atomic_write, atomic_write_json
from .images import load_gray
from .predictor import load
from .results import SegmentationResult
from .stream import stream


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))


def _write_outputs(out: Path, stem: str, gray: np.ndarray, result: Any) -> dict[str, Any]:
    record = result.to_json()
    if isinstance(result, SegmentationResult):
        mask_png = result.mask.astype(np.uint8) * (255 if result.mask.max() <= 1 else 1)
        _save_png(out / f"{stem}_mask.png", mask_png)
        _save_png(out / f"{stem}_overlay.png", result.overlay(gray))
        record.update(mask=f"{stem}_mask.png", overlay=f"{stem}_overlay.png")
    return record


def run_predict(bundle: Path, images: list[Path], video: Path | None, out: Path, backend: str | None,
                threads: int | None, smoothing: float) -> dict[str, Any]:
    """Predict every image (and every frame of the video) and write OUT/results.json beside the masks."""
    if not images and video is None:
        raise PocusError("give at least one IMAGE or --video FILE")
    predictor = load(bundle, backend=backend, threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in images:
        gray = load_gray(path)
        result = predictor(gray)
        records.append({"source": str(path), **_write_outputs(out, Path(path).stem, gray, result)})
    if video is not None:
        for index, result in enumerate(stream(predictor, video, smoothing)):
            record = result.to_json()
            if isinstance(result, SegmentationResult):
                name = f"{Path(video).stem}_{index:05d}_mask.png"
                _save_png(out / name, result.mask.astype(np.uint8) * 255)
                record["mask"] = name
            records.append({"source": f"{video}#{index}", **record})
    report = {"bundle": str(bundle), "model": predictor.manifest["name"], "task": predictor.task,
              "target": predictor.manifest["target"], "precision": predictor.manifest["precision"],
              "backend": predictor.backend.name, "results": records}
    atomic_write_json(out / "results.json", report)
    return report


def summary_line(report: dict[str, Any]) -> str:
    lat = [r["latency_ms"] for r in report["results"] if r.get("latency_ms") is not None]
    return (f"{len(report['results'])} prediction(s) with {report['model']} ({report['target']} "
            f"{report['precision']}, {report['backend']}); median latency {np.median(lat):.1f} ms" if lat else "")

