"""DICOM decoding shared by training (`data.readers.read_frame`) and the runtime (`runtime.images`), so a frame is
the same pixels in both. numpy + pydicom only (the `dicom` extra; no torch): the torch-free runtime imports it.

The rule (README "DICOM"), applied to each frame on its own:
1. pydicom decodes the pixel data (compressed syntaxes need a decoder plugin, else DicomError naming what to
   install); YBR_FULL / YBR_FULL_422 / YBR_RCT / YBR_ICT come out as RGB, PALETTE COLOR goes through its table.
2. Monochrome: the Modality LUT (Rescale Slope/Intercept or a table), then the first VOI window (Window
   Center/Width with VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID, to 0..255), else a VOI LUT Sequence
   (scaled from its output bit depth). Without either, uint8 pixels pass unchanged and anything else (16-bit,
   signed, float) is min-max scaled to 0..255. MONOCHROME1 is then inverted (255 - v), so 255 is always white.
3. Colour: samples deeper than 8 bits are scaled by 255 / (2**BitsStored - 1) and rounded to 0..255; then
   BT.601 luma by `luma_uint8` (integer, round half up), the rule every 8-bit colour input follows. No stretching.
4. Sequence of Ultrasound Regions (0018,6011): the largest region with RegionSpatialFormat 1 (2D) and
   RegionDataType 1 (tissue) is cropped out (RegionLocationMinX0..MaxX1, MinY0..MaxY1, inclusive), dropping the
   scanner's text and rulers; its PhysicalDeltaY/X give the spacing when both units are cm (3). Without such a
   region: Pixel Spacing (0028,0030), else Imager Pixel Spacing (0018,1164), else no spacing (pixels only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_EXTRA = "pip install 'pocus-edge[dicom]'"
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")
LUMA_PER_MILLE = np.array([299, 587, 114], dtype=np.int64)  # ITU-R BT.601 luma weights, the one definition
LUMA_BT601 = LUMA_PER_MILLE / 1000.0  # the same weights for float input
SPATIAL_2D, TISSUE, UNITS_CM = 1, 1, 3  # RegionSpatialFormat, RegionDataType, PhysicalUnits*Direction codes


class DicomError(DataError):
    """A DICOM file cannot be used as given; the message names the file, what is wrong and the fix."""


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: `pixels` H x W uint8 (cropped to the ultrasound image region when there is one),
    `spacing_mm` (row, column) pixel spacing in mm or None (unknown: measure in pixels), where it came from,
    `source_region` (x0, y0, x1, y1) inclusive bounds of the crop in the stored frame (None: not cropped),
    the frame index and count, and the stored frame's (rows, columns)."""

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: str  # "ultrasound_region" | "pixel_spacing" | "imager_pixel_spacing" | "none"
    source_region: tuple[int, int, int, int] | None
    frame: int = 0
    frames: int = 1
    stored_shape: tuple[int, int] = (0, 0)

    def to_json(self) -> dict[str, Any]:
        """What a results record says about the frame's geometry."""
        return {"frame": self.frame, "frames": self.frames,
                "pixel_spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
                "spacing_source": self.spacing_source,
                "ultrasound_region": list(self.source_region) if self.source_region else None}


def is_dicom(path: Path) -> bool:
    """A .dcm/.dicom name, or the DICM marker after the 128-byte preamble (PACS exports often have no suffix)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric frame to uint8 (a constant frame gives zeros); uint8 passes through unchanged."""
    if frame.dtype == np.uint8:
        return frame
    frame = frame.astype(np.float64)
    if not np.isfinite(frame).all():
        raise ValueError("frame contains NaN or infinite values")
    lo, hi = float(frame.min()), float(frame.max())
    if hi <= lo:
        return np.zeros(frame.shape, dtype=np.uint8)
    return np.round((frame - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _pydicom(what: str) -> Any:
    try:
        import pydicom
    except ImportError:
        raise DicomError(f"{what}: reading DICOM needs pydicom; {DICOM_EXTRA}")
    return pydicom


def read_dataset(path: Path, pixels: bool = True) -> Any:
    """pydicom Dataset of a file; with `pixels` False, values over 1 KiB (the pixel data) stay on disk until used,
    so a header check is cheap but still sees that pixel data is there. DicomError when it is not DICOM."""
    pydicom = _pydicom(str(path))
    try:
        return pydicom.dcmread(path, defer_size=None if pixels else 1024)
    except Exception as exc:  # InvalidDicomError, OSError, struct/EOF errors of a truncated header
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc}); pass a DICOM image "
                         "exported by the scanner or PACS")


def frame_count(ds: Any) -> int:
    """Number of frames (1 for a single-frame image)."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def check_dataset(ds: Any, what: str) -> None:
    """Cheap checks before decoding: pixel data present, a supported photometric interpretation and samples per
    pixel, and a decoder installed for the transfer syntax (else the packages pydicom says it needs)."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomError(f"{what}: DICOM file has no pixel data (a report or presentation state?); pass an image")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in MONOCHROME + COLOUR or samples not in (1, 3):
        raise DicomError(f"{what}: unsupported photometric interpretation {photometric or 'missing'!r} with "
                         f"{samples} samples per pixel; supported: {', '.join(MONOCHROME + COLOUR)}")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise DicomError(f"{what}: no Transfer Syntax UID in the file meta information; re-export it as a "
                         "DICOM Part 10 file")
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"{what}: pixel data in transfer syntax {syntax} ({syntax.name}), which pydicom cannot "
                         "decode; re-export the file uncompressed or as JPEG baseline")
    if not decoder.is_available:
        options = "; or ".join(f"pip install {_pip_names(dep)}" for dep in decoder.missing_dependencies)
        raise DicomError(f"{what}: pixel data compressed as {syntax.name} and no installed decoder handles it; "
                         f"with {DICOM_EXTRA}, install a decoder: {options}")


def _pip_names(dependency: str) -> str:
    """pydicom's 'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1' -> quoted pip arguments."""
    wanted = dependency.split("requires", 1)[-1]
    return " ".join(f"'{name.strip()}'" for name in wanted.split(" and "))


def decode_dicom(path: Path, frame: int = 0) -> DecodedFrame:
    """Decode one frame of a DICOM file by the module's rule: the one function training and runtime share."""
    return decode_dataset(read_dataset(Path(path)), frame, str(path))


def iter_frames(path: Path) -> Iterator[DecodedFrame]:
    """Every frame of a DICOM file (a cine loop frame by frame; the file is read once)."""
    ds = read_dataset(Path(path))
    for index in range(frame_count(ds)):
        yield decode_dataset(ds, index, str(path))


def decode_dataset(ds: Any, frame: int, what: str) -> DecodedFrame:
    """decode_dicom for an already read Dataset (a cine loop is read once, decoded frame by frame)."""
    frames = frame_count(ds)
    if not 0 <= frame < frames:
        raise DicomError(f"{what}: frame {frame} does not exist (the file has {frames} frame(s))")
    check_dataset(ds, what)
    from pydicom.pixels import pixel_array

    try:
        raw = pixel_array(ds, index=frame)
    except Exception as exc:  # decoder failures come as many types (ValueError, RuntimeError, OSError, ...)
        raise DicomError(f"{what}: cannot decode frame {frame} ({type(exc).__name__}: {exc}); the file may be "
                         "truncated or corrupt")
    try:
        gray = _gray_uint8(np.asarray(raw), ds)
    except ValueError as exc:
        raise DicomError(f"{what}: {exc}")
    stored = (int(gray.shape[0]), int(gray.shape[1]))
    region, spacing, source = _geometry(ds, stored, what)
    if region is not None:
        x0, y0, x1, y1 = region
        gray = gray[y0:y1 + 1, x0:x1 + 1]
    return DecodedFrame(np.ascontiguousarray(gray), spacing, source, region, frame, frames, stored)


def _gray_uint8(raw: np.ndarray, ds: Any) -> np.ndarray:
    """Decoded pixels (H x W or H x W x 3) -> H x W uint8 display values by rules 2 and 3."""
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(raw, ds)
        return luma_uint8(rgb.astype(np.float64) * (255.0 / np.iinfo(rgb.dtype).max))
    if raw.ndim == 3:
        if raw.dtype == np.uint8:
            return luma_uint8(raw)
        depth = int(ds.get("BitsStored", 8) or 8)
        return luma_uint8(raw.astype(np.float64) * (255.0 / (2 ** depth - 1)))
    gray = _voi(raw, ds)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def luma_uint8(rgb: np.ndarray) -> np.ndarray:
    """H x W x C (C >= 3, RGB first, 0..255 scale) -> H x W uint8 gray by BT.601: (299 R + 587 G + 114 B + 500)
    // 1000 in integers, so every path (training, runtime, DICOM, the Android core) gives the same bits; non-uint8
    values are rounded to 0..255 first."""
    channels = np.asarray(rgb)[..., :3]
    if channels.dtype != np.uint8:
        channels = np.clip(np.rint(channels.astype(np.float64)), 0, 255)
    return ((channels.astype(np.int64) @ LUMA_PER_MILLE + 500) // 1000).astype(np.uint8)


def _first(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    return None if value is None else float(value)


def _voi(raw: np.ndarray, ds: Any) -> np.ndarray:
    """Monochrome pixels -> uint8: Modality LUT, then the window or VOI LUT, else pass uint8 / min-max the rest."""
    values = raw
    if any(k in ds for k in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")):
        from pydicom.pixels import apply_modality_lut

        values = apply_modality_lut(raw, ds)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError("pixel values hold NaN or infinity")
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None:
        return window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip())
    if "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi

        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = apply_voi(values, ds, index=0).astype(np.float64) * (255.0 / (2 ** bits - 1))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return to_uint8(values)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI window (PS3.3 C.11.2.1.2) to 0..255 uint8: LINEAR, LINEAR_EXACT or SIGMOID."""
    x = values.astype(np.float64)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width:g} is below 1 (invalid for LINEAR); fix the header or remove it")
        if width == 1:
            y = (x > center - 0.5).astype(np.float64)
        else:
            y = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    elif function in ("LINEAR_EXACT", "SIGMOID"):
        if width <= 0:
            raise ValueError(f"Window Width {width:g} is not positive; fix the header or remove it")
        if function == "SIGMOID":
            y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
        else:
            y = np.clip((x - center) / width + 0.5, 0.0, 1.0)
    else:
        raise ValueError(f"VOI LUT Function {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID")
    return np.rint(y * 255.0).astype(np.uint8)


def _geometry(ds: Any, stored: tuple[int, int], what: str
              ) -> tuple[tuple[int, int, int, int] | None, tuple[float, float] | None, str]:
    """(crop region, (row, column) spacing in mm, spacing source) by rule 4."""
    tissue = [r for r in ds.get("SequenceOfUltrasoundRegions", []) or []
              if r.get("RegionSpatialFormat") == SPATIAL_2D and r.get("RegionDataType") == TISSUE]
    if tissue:
        region = max(tissue, key=_region_area)
        bounds = _region_bounds(region, stored, what)
        units = (region.get("PhysicalUnitsYDirection"), region.get("PhysicalUnitsXDirection"))
        dy, dx = _first(region.get("PhysicalDeltaY")), _first(region.get("PhysicalDeltaX"))
        if units == (UNITS_CM, UNITS_CM) and dy is not None and dx is not None and _positive((dy, dx)):
            return bounds, (abs(dy) * 10.0, abs(dx) * 10.0), "ultrasound_region"
        return bounds, None, "none"
    for keyword, source in (("PixelSpacing", "pixel_spacing"), ("ImagerPixelSpacing", "imager_pixel_spacing")):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            spacing = (float(value[0]), float(value[1]))
            if _positive(spacing):
                return None, spacing, source
    return None, None, "none"


def _positive(pair: tuple[float | None, float | None]) -> bool:
    return all(v is not None and np.isfinite(v) and abs(v) > 0 for v in pair)


def _region_area(region: Any) -> int:
    x0, y0 = int(region.get("RegionLocationMinX0", 0)), int(region.get("RegionLocationMinY0", 0))
    x1, y1 = int(region.get("RegionLocationMaxX1", 0)), int(region.get("RegionLocationMaxY1", 0))
    return max(0, x1 - x0 + 1) * max(0, y1 - y0 + 1)


def _region_bounds(region: Any, stored: tuple[int, int], what: str) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) inside the stored frame; a max one past the edge is clipped, worse is an error."""
    keys = ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")
    if any(k not in region for k in keys):
        raise DicomError(f"{what}: an ultrasound region lacks {', '.join(k for k in keys if k not in region)}; "
                         "fix the Sequence of Ultrasound Regions or remove it")
    x0, y0, x1, y1 = (int(region.get(k)) for k in keys)
    rows, cols = stored
    x1, y1 = (cols - 1 if x1 == cols else x1), (rows - 1 if y1 == rows else y1)
    if not (0 <= x0 < x1 < cols and 0 <= y0 < y1 < rows):
        raise DicomError(f"{what}: ultrasound region x {x0}..{x1}, y {y0}..{y1} does not fit the {cols} x {rows} "
                         "frame; fix the Sequence of Ultrasound Regions or remove it")
    return x0, y0, x1, y1
