"""Turn whatever the caller passes (path, PIL image, numpy array) into one gray float32 frame in [0, 1].

Rules (documented in README, identical on Android):
- uint8 arrays and 8-bit images are divided by 255.
- float arrays must already lie in [0, 1]; anything else is refused (we never guess a scale).
- RGB(A) is converted to gray with ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B), alpha dropped; 8-bit colour
  (files, PIL images, uint8 arrays) is rounded to 8-bit gray by `data.dicom.luma_uint8` (integers, round half up),
  float arrays keep the float luma; ultrasound saved as RGB with R = G = B is unchanged by this.
- 16-bit images are refused: their display window is scanner-specific, so the caller must window them (DICOM files
  carry their window: the DICOM rule below applies).
- Image files decode to 8-bit gray through `decode_image_file`, the one function training (`data.readers`) uses
  too, so a file gives the same pixels in both (float 'F' images are rounded to 8-bit levels there).
- Empty, NaN/inf, wrong-rank and oversize (decompression-bomb) inputs are refused with the reason.
- DICOM files (.dcm/.dicom or the DICM marker) decode through pocus_edge.data.dicom, the function training uses
  (VOI window, MONOCHROME1, colour to luma, crop to the ultrasound region); a cine loop is refused here: iterate
  pocus_edge.data.dicom.iter_frames(path) and pass each frame's pixels.
- 3-D arrays are channels last (H x W x C); one whose first axis (1, 3 or 4) is shorter than both others is
  taken to be channel-first (C x H x W) and refused with the transpose that fixes it, never read as rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dicom import (
    DICOM_SUFFIXES,
    LUMA_BT601,
    DicomError,
    check_dataset,
    decode_dataset,
    frame_count,
    is_dicom,
    luma_uint8,
    read_dataset,
)
from ..errors import PocusError

MAX_PIXELS = 64_000_000  # ~8000 x 8000: far above any scanner frame, far below a decompression bomb
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)  # predict searches folders for
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "I;16N")


class InputError(PocusError):
    """An image given to a predictor cannot be used as it is."""


def _check_size(height: int, width: int, what: str, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise InputError(f"{what}: empty image ({height} x {width})")
    if height * width > max_pixels:
        raise InputError(
            f"{what}: {width} x {height} pixels exceeds the {max_pixels:,}-pixel limit (a decompression bomb or not "
            "an ultrasound frame); resize it first"
        )


def _from_path(path: Path, max_pixels: int) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    if is_dicom(path):
        return _from_dicom(path, max_pixels)
    return decode_image_file(path, max_pixels).astype(np.float32) / 255.0


def decode_image_file(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A still image file (not DICOM) -> H x W uint8 gray by the module's rules: the one decoder training and runtime
    share. InputError (naming the file, the problem and the fix) for unreadable, oversize and 16-bit files."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            _check_size(img.height, img.width, str(path), max_pixels)
            return gray8_from_pil(img, str(path))
    except InputError:
        raise
    except Exception as exc:  # PIL raises many types for unreadable files
        raise InputError(f"{path}: cannot read as an image ({exc.__class__.__name__}: {exc})")


def check_image_file(path: Path, max_pixels: int = MAX_PIXELS) -> None:
    """Cheap check before any model runs: the file exists, its header decodes, its size and bit depth are usable
    and (PNG) every chunk's CRC holds, so junk, empty, 16-bit and truncated PNG files are found up front."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    if is_dicom(path):
        check_dicom_file(path, max_pixels)
        return
    try:
        with Image.open(path) as img:
            _check_size(img.height, img.width, str(path), max_pixels)
            _refuse_16_bit(img, str(path))
            img.verify()
    except InputError:
        raise
    except Exception as exc:  # PIL raises many types for unreadable files
        raise InputError(f"{path}: cannot read as an image ({exc.__class__.__name__}: {exc})")


def check_dicom_file(path: Path, max_pixels: int = MAX_PIXELS) -> None:
    """The header-only part of check_image_file for DICOM: readable, pixel data present, supported photometric
    interpretation, a decoder installed for its transfer syntax, frame size within the limit."""
    try:
        ds = read_dataset(path, pixels=False)
        check_dataset(ds, str(path))
    except DicomError as exc:
        raise InputError(str(exc))
    _check_size(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), str(path), max_pixels)


def _from_dicom(path: Path, max_pixels: int) -> np.ndarray:
    check_dicom_file(path, max_pixels)
    try:
        ds = read_dataset(path)
        if frame_count(ds) > 1:
            raise InputError(f"{path}: DICOM cine loop of {frame_count(ds)} frames; predict it frame by frame "
                             "(pocus predict does; in Python iterate pocus_edge.data.dicom.iter_frames(path))")
        return _channels_last_to_gray01(decode_dataset(ds, 0, str(path)).pixels, str(path), max_pixels)
    except DicomError as exc:
        raise InputError(str(exc))


def find_images(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Image files (IMAGE_SUFFIXES, any case) below `folder`, recursively and sorted; hidden files and folders,
    the folder `exclude` (an output folder inside the input) and symlinked folders are skipped."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() != skip]
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _refuse_16_bit(img: Any, what: str) -> None:
    if img.mode in SIXTEEN_BIT_MODES:
        raise InputError(
            f"{what}: 16-bit image (mode {img.mode}); window it to 8 bits with your scanner's display window first "
            "(export an 8-bit PNG, or the DICOM file, whose window pocus applies)"
        )


def gray8_from_pil(img: Any, what: str) -> np.ndarray:
    """A PIL image -> H x W uint8 gray: 16-bit refused, float ('F') checked to lie in [0, 1] and rounded to 8-bit
    levels, palette/CMYK/1-bit through RGB, colour by `luma_uint8`."""
    _refuse_16_bit(img, what)
    if img.mode == "F":
        gray = _channels_last_to_gray01(np.asarray(img, dtype=np.float32), what)
        return np.rint(gray * 255.0).astype(np.uint8)
    if img.mode not in ("L", "RGB", "RGBA", "LA"):
        img = img.convert("RGB")
    return _gray8(np.asarray(img))


def _gray8(array: np.ndarray) -> np.ndarray:
    """uint8 H x W or H x W x C (C in 1..4, channels last) -> H x W uint8: colour by luma, alpha dropped."""
    if array.ndim == 2:
        return array
    return luma_uint8(array) if array.shape[2] >= 3 else array[..., 0]


def _from_pil(img: Any, what: str) -> np.ndarray:
    return gray8_from_pil(img, what).astype(np.float32) / 255.0


def to_gray01(array: np.ndarray, what: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A 2-D (H x W) or 3-D (H x W x 1/3/4) uint8 or float array -> H x W float32 in [0, 1]."""
    if not isinstance(array, np.ndarray):
        raise InputError(f"{what}: expected a numpy array, got {type(array).__name__}")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[0] < min(array.shape[1:]):
        fix = "array[0]" if array.shape[0] == 1 else "array.transpose(1, 2, 0)"
        raise InputError(
            f"{what}: array of shape {array.shape} looks channel-first (C x H x W); this runtime takes H x W or "
            f"H x W x C (channels last), pass {fix}"
        )
    return _channels_last_to_gray01(array, what, max_pixels)


def _channels_last_to_gray01(array: np.ndarray, what: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """to_gray01 for an array known to be channels last (decoded by PIL)."""
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels = 0
    else:
        raise InputError(
            f"{what}: array of shape {array.shape}; expected H x W (gray) or H x W x C with C in 1, 3, 4"
        )
    _check_size(array.shape[0], array.shape[1], what, max_pixels)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(_gray8(array), dtype=np.float32) / np.float32(255.0)
    if array.dtype in (np.float32, np.float64, np.float16):
        gray = array.astype(np.float32)
        if not np.isfinite(gray).all():
            raise InputError(f"{what}: contains NaN or infinite values")
        lo, hi = float(gray.min()), float(gray.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{what}: float values span [{lo:.4g}, {hi:.4g}]; float input must lie in [0, 1] "
                "(pass uint8 pixels, or divide by 255)"
            )
    elif array.dtype == np.uint16:
        raise InputError(f"{what}: uint16 (16-bit) pixels; window them to 8 bits with your scanner's display window")
    else:
        raise InputError(f"{what}: unsupported dtype {array.dtype}; pass uint8 pixels or floats in [0, 1]")
    if channels in (3, 4):
        gray = gray[..., :3] @ LUMA_BT601.astype(np.float32)
    elif channels == 2:  # gray + alpha
        gray = gray[..., 0]
    elif channels == 1:
        gray = gray[..., 0]
    return np.ascontiguousarray(np.clip(gray, 0.0, 1.0), dtype=np.float32)


def load_gray(image: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Path, PIL image or numpy array -> H x W float32 gray in [0, 1] (rules in the module docstring)."""
    if isinstance(image, (str, Path)):
        return _from_path(Path(image), max_pixels)
    if isinstance(image, np.ndarray):
        return to_gray01(image, "array", max_pixels)
    if type(image).__module__.startswith("PIL"):
        _check_size(image.height, image.width, "PIL image", max_pixels)
        return _from_pil(image, "PIL image")
    raise InputError(f"unsupported input {type(image).__name__}; pass a file path, PIL image or numpy array")
