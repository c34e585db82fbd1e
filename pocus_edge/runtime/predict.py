"""`pocus predict`: run a bundle on image files, folders or a video and write masks, overlays and a JSON report.

Contract (README "pocus predict"):
- Every input is checked (exists, decodes, usable bit depth; folders searched recursively for IMAGE_SUFFIXES,
  sorted, the output folder skipped) and the bundle loaded before anything is written.
- Output names are unique and stable: the input's path below the common parent of all inputs, flattened with
  `__` and made file-name safe; names that still collide (case-insensitively) get `_` + 8 hex of the sha1 of the
  resolved path. The same file given twice is predicted once and listed under `duplicates_ignored`.
- Everything is written to a hidden staging folder and moved into OUT at the end, results.json last: a failed
  run leaves nothing new behind. A model output with NaN/inf is an error naming bundle and file.
- DICOM inputs decode as in training (data/dicom.py); a cine loop is predicted frame by frame (STEM_frames/), each
  record carries the frame's spacing and crop, and a segmentation model also writes STEM_seg.dcm (dicom_seg.py;
  --no-dicom-seg turns it off; results.json "dicom_seg" lists each SEG or why none was written).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dicom import decode_dataset, frame_count, is_dicom, read_dataset
from ..errors import ConfigError, PocusError
from ..io import atomic_write, atomic_write_json, current_umask
from .dicom_seg import require_highdicom, seg_unsupported, write_seg
from .images import IMAGE_SUFFIXES, check_image_file, find_images, load_gray, to_gray01
from .postprocess import mask_png, mask_values, segmentation_classes
from .predictor import load
from .results import NonFiniteOutputError, SegmentationResult
from .stream import OverlayVideo, check_smoothing, stream, video_fps, video_frames

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class Inputs:
    """The image files to predict (unique, in order) and an account of what was given."""

    files: list[Path] = field(default_factory=list)
    given: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def collect_inputs(paths: list[Path], out: Path) -> Inputs:
    """Expand folders, check every file up front and drop repeats of the same (resolved) file."""
    inputs = Inputs()
    seen: set[Path] = set()
    for given in map(Path, paths):
        if given.is_dir():
            if given.resolve() == out.resolve():
                raise ConfigError(f"--out {out}: is the input folder {given}; masks would mix with the images, "
                                  "give another folder")
            found = find_images(given, exclude=out)
            if not found:
                raise PocusError(f"{given}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)}; searched "
                                 "recursively, hidden files and the --out folder skipped)")
            inputs.given.append({"path": str(given), "kind": "folder", "images_found": len(found)})
        elif given.is_file():
            if given.suffix.lower() in VIDEO_SUFFIXES:
                raise PocusError(f"{given}: a video; pass it with --video FILE")
            found = [given]
            inputs.given.append({"path": str(given), "kind": "file"})
        elif given.exists():
            raise PocusError(f"{given}: neither a regular file nor a folder")
        else:
            raise PocusError(f"{given}: no such image file or folder")
        for path in found:
            check_image_file(path)
            key = path.resolve()
            if key in seen:
                inputs.duplicates.append(str(path))
            else:
                seen.add(key)
                inputs.files.append(path)
    return inputs


def _safe_name(text: str) -> str:
    name = re.sub(r"[^\w.-]+", "_", text).lstrip(".-")[:120]
    return name or "image"


def output_stems(files: list[Path]) -> list[str]:
    """Unique (also case-insensitively), file-name-safe output stems, one per input file (rules in the docstring)."""
    if not files:
        return []
    absolute = [Path(os.path.abspath(f)) for f in files]
    root = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    stems = [_safe_name("__".join(a.relative_to(root).with_suffix("").parts)) for a in absolute]
    counts = Counter(s.lower() for s in stems)
    for i, (stem, f) in enumerate(zip(stems, files, strict=True)):
        if counts[stem.lower()] > 1:
            stems[i] = f"{stem}_{hashlib.sha1(str(f.resolve()).encode()).hexdigest()[:8]}"
    if len({s.lower() for s in stems}) != len(stems):
        raise RuntimeError(f"output names collide after hashing: {stems}")  # a bug, not a user error
    return stems


class Staging:
    """A hidden folder the outputs are written to; commit() moves them into OUT (results.json last), discard()
    removes it and any parent folders it had to create."""

    def __init__(self, out: Path):
        self.out = out
        self.created: list[Path] = []
        self.dir = out
        try:
            if out.is_dir():
                self.dir = Path(tempfile.mkdtemp(prefix=".pocus-predict-", dir=out))
                return
            for parent in reversed(out.absolute().parents):
                if not parent.exists():
                    parent.mkdir()
                    self.created.append(parent)
            self.dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
        except OSError:
            self.discard()
            raise

    def commit(self, last: str) -> None:
        self.dir.chmod(0o777 & ~current_umask())
        if not self.out.exists():
            os.replace(self.dir, self.out)
            return
        names = sorted(p.relative_to(self.dir) for p in self.dir.rglob("*") if p.is_file())
        for rel in sorted(names, key=lambda r: str(r) == last):
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.dir / rel, self.out / rel)
        shutil.rmtree(self.dir, ignore_errors=True)

    def discard(self) -> None:
        if self.dir != self.out:
            shutil.rmtree(self.dir, ignore_errors=True)
        for parent in reversed(self.created):
            try:
                parent.rmdir()
            except OSError:
                break


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))


def _mask_png(result: SegmentationResult) -> np.ndarray:
    """Binary model: 0 / 255; multi-class: the class index (0..K-1), whatever classes this image happens to hold."""
    return mask_png(result.mask, int(result.probabilities.shape[0]))


def _image_record(folder: Path, stem: str, gray: np.ndarray, result: Any) -> dict[str, Any]:
    record = result.to_json()
    if isinstance(result, SegmentationResult):
        _save_png(folder / f"{stem}_mask.png", _mask_png(result))
        _save_png(folder / f"{stem}_overlay.png", result.overlay(gray))
        record.update(mask=f"{stem}_mask.png", overlay=f"{stem}_overlay.png")
    return record


def _predict_one(predictor: Any, image: Any, bundle: Path, what: str, spacing: Any = None) -> Any:
    try:
        return predictor(image) if spacing is None else predictor(image, pixel_spacing_mm=spacing)
    except NonFiniteOutputError as exc:
        raise NonFiniteOutputError(f"predict: model output of {bundle} on {what}", exc.detail) from None


def _predict_dicom(predictor: Any, bundle: Path, path: Path, stem: str, folder: Path,
                   dicom_seg: bool) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(one record per frame, SEG summary or None). Frames decode as in training (data/dicom.py: cropped to the
    ultrasound region, spacing in each record and, when the bundle measures, passed to the predictor so the
    measurements are in mm); a cine loop's masks and overlays go to STEM_frames/; with
    `dicom_seg` a segmentation model's masks also go into STEM_seg.dcm (dicom_seg.py), or the reason it cannot."""
    ds = read_dataset(path)
    count = frame_count(ds)
    seg = {"source": str(path), "source_sop_instance_uid": str(ds.get("SOPInstanceUID", "")), "file": None}
    skipped = seg_unsupported(ds) if dicom_seg and predictor.task == "segmentation" else "not requested"
    measures = predictor.task == "segmentation" and bool(predictor.manifest.get("measurements"))
    records, masks, frames = [], [], []
    for index in range(count):
        frame = decode_dataset(ds, index, str(path))
        gray = to_gray01(frame.pixels)
        result = _predict_one(predictor, gray, bundle, str(path) if count == 1 else f"{path} frame {index}",
                              frame.spacing_mm if measures else None)
        name = stem if count == 1 else f"{stem}_frames/{index:05d}"
        records.append({"source": str(path) if count == 1 else f"{path}#{index}",
                        **_image_record(folder, name, gray, result), "dicom": frame.to_json()})
        if skipped is None:
            masks.append(result.mask)
            frames.append(frame)
    if skipped == "not requested":
        return records, None
    if skipped is not None:
        return records, {**seg, "skipped": skipped}
    uid = write_seg(folder / f"{stem}_seg.dcm", ds, masks, frames, predictor, int(result.probabilities.shape[0]))
    return records, {**seg, "file": f"{stem}_seg.dcm", "sop_instance_uid": uid}


def _predict_video(predictor: Any, bundle: Path, video: Path, smoothing: float, folder: Path,
                   spacing: tuple[float, float] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one record per frame, video summary); a segmentation model's masks go to STEM_frames/ and its overlays
    into STEM_overlay.mp4 beside them."""
    stem = _safe_name(video.stem)
    current: dict[str, np.ndarray] = {}

    def tapped() -> Iterator[np.ndarray]:
        for frame in video_frames(video):
            current["frame"] = frame
            yield frame

    segmentation = predictor.task == "segmentation"
    overlay = OverlayVideo(folder / f"{stem}_overlay.mp4", video_fps(video)) if segmentation else None
    results = stream(predictor, tapped(), smoothing)
    records: list[dict[str, Any]] = []
    while True:
        try:
            result = next(results)
        except StopIteration:
            break
        except NonFiniteOutputError as exc:
            where = f"{video} frame {len(records)}"
            raise NonFiniteOutputError(f"predict: model output of {bundle} on {where}", exc.detail) from None
        if isinstance(result, SegmentationResult):
            result.pixel_spacing_mm = spacing  # measured from the (smoothed) mask when to_json reads it
        record = {"source": f"{video}#{len(records)}", **result.to_json()}
        if overlay is not None:
            record["mask"] = f"{stem}_frames/{len(records):05d}_mask.png"
            _save_png(folder / record["mask"], _mask_png(result))
            overlay.write(result.overlay(to_gray01(current["frame"])))
        records.append(record)
    info: dict[str, Any] = {"source": str(video), "frames": len(records), "smoothing": smoothing}
    if overlay is not None:
        overlay.close()
        info.update(overlay=None if overlay.error else overlay.path.name, overlay_error=overlay.error,
                    overlay_padding_bottom_right=list(overlay.padding))
    return records, info


def _check_request(images: list[Path], video: Path | None, out: Path, smoothing: float) -> None:
    if not images and video is None:
        raise PocusError("give at least one IMAGE (file or folder) or --video FILE")
    if video is None and smoothing:
        raise ConfigError("--smooth applies to --video only; drop it or add --video FILE")
    check_smoothing(smoothing, "--smooth")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is a file; give a folder path")
    if video is not None:
        video_fps(video)  # exists, OpenCV installed and able to open it


def run_predict(bundle: Path, images: list[Path], video: Path | None, out: Path, backend: str | None,
                threads: int | None, smoothing: float, trusted_keys: list[str | Path] | None = None,
                dicom_seg: bool = True, pixel_spacing_mm: Any = None) -> dict[str, Any]:
    """Predict every image (and every frame of the video) and write OUT/results.json beside the masks.

    `pixel_spacing_mm` (one number or (row, col), mm per pixel of the images as given) puts the measurements the
    bundle lists into mm for image files and video frames; DICOM inputs use their own spacing.

    With `trusted_keys` the bundle must be signed by one of them; the signature, digest and files are checked in
    the one `load` that also opens the model, so nothing can change between the check and the use.
    """
    out = Path(out)
    _check_request(images, video, out, smoothing)
    inputs = collect_inputs(images, out)
    predictor = load(bundle, backend=backend, threads=threads, trusted_keys=trusted_keys)
    spacing = predictor.spacing(pixel_spacing_mm, "--pixel-spacing")
    dicom_inputs = [f for f in inputs.files if is_dicom(f)]
    if dicom_seg and dicom_inputs and predictor.task == "segmentation":
        require_highdicom(str(dicom_inputs[0]))
    try:
        staging = Staging(out)
    except OSError as exc:
        raise PocusError(f"--out {out}: cannot create the output folder ({exc.strerror or exc}); choose another")
    try:
        records, segs = [], []
        for path, stem in zip(inputs.files, output_stems(inputs.files), strict=True):
            if path in dicom_inputs:
                frame_records, seg = _predict_dicom(predictor, bundle, path, stem, staging.dir, dicom_seg)
                records += frame_records
                segs += [seg] if seg else []
                continue
            gray = load_gray(path)
            result = _predict_one(predictor, gray, bundle, str(path), spacing)
            records.append({"source": str(path), **_image_record(staging.dir, stem, gray, result)})
        video_info = None
        if video is not None:
            frames, video_info = _predict_video(predictor, bundle, Path(video), smoothing, staging.dir, spacing)
            records += frames
        report = {"bundle": str(bundle), "model": predictor.manifest["name"], "task": predictor.task,
                  "target": predictor.manifest["target"], "precision": predictor.manifest["precision"],
                  "backend": predictor.backend.name, "inputs": inputs.given, "images": len(inputs.files),
                  "duplicates_ignored": inputs.duplicates, "video": video_info,
                  "mask_values": _mask_values(predictor), "dicom_seg": segs,
                  "smoke_test_only": bool(predictor.manifest.get("smoke_test_only", False)), "results": records}
        atomic_write_json(staging.dir / "results.json", report)
        staging.commit(last="results.json")
    except OSError as exc:
        staging.discard()
        raise PocusError(f"--out {out}: cannot write predictions ({exc.strerror or exc}); nothing was written")
    except BaseException:
        staging.discard()
        raise
    return report


def _mask_values(predictor: Any) -> str | None:
    if predictor.task != "segmentation":
        return None
    return mask_values(segmentation_classes(predictor.manifest))  # the rule _mask_png writes by


def summary_line(report: dict[str, Any]) -> str:
    """One line: what was predicted, from what (folder counts, duplicates) and the median latency."""
    lat = [r["latency_ms"] for r in report["results"] if r.get("latency_ms") is not None]
    found = [f"{g['images_found']} in {g['path']}" for g in report.get("inputs", []) if g["kind"] == "folder"]
    parts = [f"{report.get('images', 0)} image(s)" + (f" ({', '.join(found)})" if found else "")]
    if report.get("duplicates_ignored"):
        parts.append(f"{len(report['duplicates_ignored'])} duplicate input(s) predicted once")
    if report.get("video"):
        parts.append(f"{report['video']['frames']} video frame(s)")
    written = [s for s in report.get("dicom_seg") or [] if s.get("file")]
    if report.get("dicom_seg"):
        parts.append(f"{len(written)} DICOM SEG(s) of {len(report['dicom_seg'])} DICOM input(s)")
    line = (f"{len(report['results'])} prediction(s) with {report['model']} ({report['target']} "
            f"{report['precision']}, {report['backend']}): {', '.join(parts)}")
    line += f"; median latency {np.median(lat):.1f} ms" if lat else ""
    return line + ("; WARNING: smoke_test_only model (descends from random weights): the outputs carry no meaning"
                   if report.get("smoke_test_only") else "")
