"""Streaming, memory-bounded int8 calibration for ONNX Runtime's QDQ quantiser, and the frame record.

ONNX Runtime's calibrators hold activations in memory: its HistogramCalibrater stacks every activation of every
frame a reader yields before it builds histograms (100 frames of a 256 px U-Net-ResNet50 exhausted 24 GB here),
and calling `collect_data` per chunk instead merges histograms approximately (a later chunk with a wider range
re-bins, so the result depends on chunk order). Here frames stream one chunk at a time:
- minmax: ORT's own MinMaxCalibrater, `collect_data` per chunk (it keeps only per-frame min/max and merges
  exactly);
- entropy / percentile: two passes over the frames with ORT's augmented session. Pass 1 keeps each tensor's
  min/max, pass 2 adds per-chunk counts into histograms over the final range, so the histograms (and the ranges
  ORT's HistogramCollector derives from them) equal ORT's in-memory result bit for bit (tests prove it) while
  memory holds one chunk's activations.
The ranges are written as ORT's calibration cache (TensorsData JSON), which `quantize_static` reads instead of
calibrating again: the full model, every sensitivity variant and every mixed-precision step share one calibration.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 8  # frames per chunk: what the histogram pass holds in memory at once
OP_TYPES = None  # calibrate every float tensor of every quantisable node (ORT's default)


def frame_digest(image: np.ndarray) -> str:
    """sha256 of a decoded frame (dtype, shape and pixels) as the runtime reads it."""
    h = hashlib.sha256(f"{image.dtype.str}{tuple(image.shape)}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def frame_list(images: list[np.ndarray], names: list[str]) -> list[dict[str, str]]:
    return [{"name": n, "sha256": frame_digest(im)} for im, n in zip(images, names, strict=True)]


def _chunks(frames: Callable[[], Iterator[np.ndarray]], size: int) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for frame in frames():
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ChunkReader:
    """A CalibrationDataReader over one chunk of model inputs (ORT calls get_next until None)."""

    def __init__(self, chunk: list[np.ndarray], input_name: str) -> None:
        self._it = iter([{input_name: x} for x in chunk])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _calibrator(model: Path, method: str, tmp: str):
    """ORT's calibrator with the settings quantize_static gives it (percentile: symmetric |x| histogram)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]
    extra = {"percentile": 99.999} if method == "percentile" else {}
    return create_calibrator(model, OP_TYPES, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                             calibrate_method=kind, extra_options=extra)


def passes(methods: list[str]) -> int:
    """Passes `calibrate` makes over the frames for `methods`: minmax one, the histogram methods two (shared)."""
    return int("minmax" in methods) + 2 * any(m in ("entropy", "percentile") for m in methods)


def calibrate(model: Path, frames: Callable[[], Iterator[np.ndarray]], methods: list[str],
              chunk: int = CHUNK) -> dict[str, Any]:
    """{method: TensorsData} for `methods`, streaming `frames()` (model inputs, 1 x C x H x W) in chunks.

    `frames` is called once per pass, so it must re-yield the same frames. Entropy and percentile share passes.
    """
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pocus-calib-") as tmp, contextlib.redirect_stdout(sys.stderr):
        if "minmax" in methods:
            cal = _calibrator(model, "minmax", tmp)
            name = cal.infer_session.get_inputs()[0].name
            for part in _chunks(frames, chunk):
                cal.collect_data(ChunkReader(part, name))
            out["minmax"] = cal.compute_data()
            del cal
        hist = [m for m in methods if m in ("entropy", "percentile")]
        if hist:
            out.update(_histogram_ranges(model, frames, hist, chunk, tmp))
    return out


def _histogram_ranges(model: Path, frames, methods: list[str], chunk: int, tmp: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorsData

    cals = {m: _calibrator(model, m, tmp) for m in methods}
    first = cals[methods[0]]
    session, tensors = first.infer_session, sorted(first.tensors_to_calibrate)
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    index = [outputs.index(t) for t in tensors]
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    alo = dict(lo)  # |x| extremes, for the absolute-value histogram (symmetric percentile)
    ahi = dict(hi)
    dtype: dict[str, np.dtype] = {}
    for part in _chunks(frames, chunk):  # pass 1: ranges
        for x in part:
            values = session.run(None, {name: x})
            for t, i in zip(tensors, index, strict=True):
                v = values[i]
                dtype[t] = v.dtype
                if v.size:
                    lo[t], hi[t] = min(lo[t], np.nanmin(v)), max(hi[t], np.nanmax(v))
                    a = np.abs(v)
                    alo[t], ahi[t] = min(alo[t], np.nanmin(a)), max(ahi[t], np.nanmax(a))
    result = {}
    for m in methods:
        cal = cals[m]
        absolute = m == "percentile" and cal.symmetric
        bins = cal.num_bins
        counts = {t: np.zeros(bins, np.int64) for t in tensors}
        bounds = {t: _bounds(t, absolute, lo, hi, alo, ahi, dtype) for t in tensors}
        for part in _chunks(frames, chunk):  # pass 2: counts over the final range
            for x in part:
                values = session.run(None, {name: x})
                for t, i in zip(tensors, index, strict=True):
                    v = values[i].ravel()
                    counts[t] += np.histogram(np.abs(v) if absolute else v, bins, range=bounds[t])[0]
        collector = HistogramCollector(method=m, symmetric=cal.symmetric, num_bins=bins,
                                       num_quantized_bins=cal.num_quantized_bins, percentile=cal.percentile,
                                       scenario=cal.scenario)
        for t in tensors:
            edges = np.histogram(np.empty(0, dtype[t]), bins, range=bounds[t])[1]
            mn, mx = dtype[t].type(lo[t]), dtype[t].type(hi[t])
            if absolute:
                collector.histogram_dict[t] = (counts[t], edges.astype(dtype[t]), mn, mx)
            else:
                collector.histogram_dict[t] = (counts[t], edges, mn, mx, bounds[t][1])
        kind = CalibrationMethod.Entropy if m == "entropy" else CalibrationMethod.Percentile
        result[m] = TensorsData(kind, collector.compute_collection_result())
    return result


def _bounds(t, absolute, lo, hi, alo, ahi, dtype):
    """The histogram range ORT's in-memory collector would use for tensor t (the same dtype, so equal bins)."""
    cast = dtype[t].type
    if absolute:  # np.histogram(|x|, bins): range (min |x|, max |x|)
        return cast(alo[t]), cast(ahi[t])
    threshold = np.array(max(abs(lo[t]), abs(hi[t])), dtype=dtype[t])  # collect_value: +-max |x|
    return -threshold, threshold


def save_cache(ranges: Any, path: Path) -> Path:
    """Write TensorsData as ORT's calibration cache (quantize_static(calibration_cache_path=...))."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, path)
    return path


PHANTOMS = "phantoms"  # --parity-data phantoms: synthetic parity frames, only when asked for by name


def frames_for(calibrates: bool, calib_dir: Path | None, parity_data: str | Path | None, num_calib: int,
               num_parity: int):
    """(calibration set, parity set). A calibrating int8 export is judged on held-out real frames: without
    --parity-data, the held-out part of --calib-data; if that is empty, a ConfigError (never phantoms unless
    `parity_data` is the word "phantoms")."""
    from ..errors import ConfigError
    from .data import calibration_and_parity, phantom_set

    explicit = parity_data is not None and str(parity_data) == PHANTOMS
    parity_dir = None if parity_data is None or explicit else Path(parity_data)
    calibration, parity = calibration_and_parity(calib_dir, parity_dir, num_calib, num_parity)
    if explicit:
        return calibration, phantom_set(num_parity)
    if calibrates and parity_dir is None and not parity.origin.endswith("(held out from calibration)"):
        raise ConfigError(
            f"int8 parity needs real frames the quantiser never saw, and --calib-data {calib_dir} has too few "
            "images (or case/patient groups) to hold some out. Pass --parity-data DIR (other real frames), or "
            "--parity-data phantoms to accept synthetic phantoms (the manifest then says so)")
    return calibration, parity


def write_frame_record(folder: Path, calibration, parity, options: dict[str, Any], search=None) -> str:
    """calibration_frames.json: the calibration and parity frame lists (sha256 per frame), count and method, and
    `search`, the held-out frames the mixed-precision search chose on (disjoint from parity), where one ran."""
    from ..io import atomic_write_json

    record = {"calibration": {"source": calibration.origin, "count": len(calibration.images),
                              "method": options.get("calibration_method", options.get("quantization", "")),
                              "frames": frame_list(calibration.images, calibration.names)},
              "parity": {"source": parity.origin, "count": len(parity.images),
                         "frames": frame_list(parity.images, parity.names)},
              "sha256_of": "each decoded gray frame as the runtime reads it (dtype, shape, pixels)"}
    if search is not None:
        record["mixed_precision_search"] = {"source": search.origin, "count": len(search.images),
                                            "frames": frame_list(search.images, search.names)}
    atomic_write_json(folder / "calibration_frames.json", record)
    return "calibration_frames.json"
