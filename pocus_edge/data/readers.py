"""Decode ultrasound files to 2-D uint8 grayscale frames: still images, DICOM and video.

Rules (stated once, used everywhere): still images decode through `runtime.images.decode_image_file`, the
function the runtime uses (colour to BT.601 luma rounded to 8 bits, 16-bit refused with how to convert it, float
images in [0, 1] rounded to 8-bit levels: its docstring states the rule); DICOM goes through
`data.dicom.decode_dicom`, the function the runtime uses too (VOI window, MONOCHROME1, colour, crop to the
ultrasound region: its docstring states the rule; multi-frame files give one frame per index); video frames are
sampled evenly. PIL's decompression-bomb guard stays on, so an absurdly large image is refused.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image

from ..errors import DataError
from ..runtime.images import InputError, decode_image_file
from . import dicom

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = set(dicom.DICOM_SUFFIXES)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
# What decoding a broken file raises: PIL gives OSError (truncated), SyntaxError (broken PNG chunks),
# DecompressionBombError; our own checks give ValueError; the shared still-image decoder gives InputError.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, InputError)
MANIFEST_PATH_COLUMNS = ("file", "mask")


def read_image(path: Path) -> np.ndarray:
    """Read a still image file as uint8 grayscale, decoded exactly as the runtime decodes it."""
    return decode_image_file(Path(path))


def dicom_frame_count(path: Path) -> int:
    """Number of frames in a DICOM file (1 for single-frame)."""
    return dicom.frame_count(dicom.read_dataset(path, pixels=False))


def read_dicom(path: Path, frame: int = 0) -> np.ndarray:
    """One frame of a DICOM file as uint8 grayscale, decoded exactly as the runtime decodes it."""
    return dicom.decode_dicom(path, frame).pixels


def video_frame_indices(path: Path, max_frames: int) -> list[int]:
    """Evenly spaced frame indices of a video file, at most `max_frames`."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if total <= 0:
        raise ValueError("video has no readable frames")
    count = min(total, max_frames)
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def read_video_frame(path: Path, frame: int) -> np.ndarray:
    """Read one frame of a video file as uint8 grayscale."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, bgr = cap.read()
    finally:
        cap.release()
    if not ok:
        raise ValueError(f"cannot decode frame {frame}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def read_frame(path: Path, frame: int | None = None) -> np.ndarray:
    """Read a 2-D uint8 grayscale frame from any supported file; `frame` indexes DICOM/video frames."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        out = read_dicom(path, frame or 0)
    elif suffix in VIDEO_SUFFIXES:
        out = read_video_frame(path, frame or 0)
    else:
        out = read_image(path)
    if out.ndim != 2 or min(out.shape) < 8:
        raise ValueError(f"decoded to shape {out.shape}, expected a 2-D image of at least 8x8 pixels")
    return out


def read_frame_checked(path: Path, what: str = "image", frame: int | None = None) -> np.ndarray:
    """read_frame, with any decoding failure turned into a DataError that names the file."""
    try:
        return read_frame(Path(path), frame)
    except DECODE_ERRORS as exc:
        reason = str(exc).splitlines()[0].removeprefix(f"{path}: ") if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot decode this {what} ({reason}); replace the file or remove it from the data")


def _leaves_folder(relative: str) -> bool:
    """True for an absolute path (POSIX or Windows) or one that climbs out with `..`."""
    posix = PurePosixPath(relative.replace("\\", "/"))
    return posix.is_absolute() or bool(PureWindowsPath(relative).drive) or ".." in posix.parts


def read_manifest_csv(root: Path) -> list[dict[str, str]]:
    """Rows of ROOT/manifest.csv (UTF-8, BOM allowed), refusing undecodable bytes and paths that leave ROOT.

    The `file` and `mask` columns must be relative paths inside ROOT: an absolute path or `..` would read
    images from elsewhere on the disk and silently mix them into the data.
    """
    path = Path(root) / "manifest.csv"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})")
    if "file" not in (reader.fieldnames or []):
        raise DataError(f"{path}: no 'file' column (found: {', '.join(reader.fieldnames or []) or 'nothing'}); "
                        "the first line must name the columns, e.g. file,mask,label")
    for number, row in enumerate(rows, start=2):
        for column in MANIFEST_PATH_COLUMNS:
            value = row.get(column) or ""
            if _leaves_folder(value):
                raise DataError(f"{path}: line {number}: {column} {value!r} points outside {root}; "
                                "manifest paths must be relative to the folder that holds manifest.csv")
    return rows
