"""`--crop-overlays`: keep only the ultrasound image region of a scanner frame (burned-in text and rulers out).

DICOM files with a Sequence of Ultrasound Regions are already cropped to their tissue region when decoded
(data/dicom.py, rule 4); those frames pass unchanged. Every other frame goes through `ultrasound_region`:
1. a 5 x 5 mean filter, then pixels brighter than `DARK` are "on" (the filter fills speckle's dark gaps);
2. holes are filled and the 8-connected components labelled; the largest is the image (fan or rectangle).
   Text, tick marks and rulers are separate, much smaller components and are dropped;
3. the frame is cropped to that component's bounding box, and pixels of the box outside the component are set
   to 0, so a label inside a wide fan's corner does not survive the crop either.
When the largest component covers less than `MIN_AREA` of the frame (no image found: a blank or text-only
screen) or more than `MAX_AREA` (no dark border: nothing to remove) the frame is returned as is.
Needs scipy (installed with the `train` extra, through scikit-learn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .readers import DICOM_SUFFIXES, read_frame

DARK = 12
MIN_AREA = 0.05
MAX_AREA = 0.98


def ultrasound_region(pixels: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """((y0, y1, x0, x1) half-open box, boolean mask of the image inside it), or None: keep the frame whole."""
    from scipy import ndimage

    smooth = ndimage.uniform_filter(pixels.astype(np.float32), size=5)
    on = ndimage.binary_fill_holes(smooth > DARK)
    labels, count = ndimage.label(on, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    share = sizes[largest - 1] / pixels.size
    if share < MIN_AREA or share > MAX_AREA:
        return None
    rows = np.flatnonzero(np.any(labels == largest, axis=1))
    cols = np.flatnonzero(np.any(labels == largest, axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if min(y1 - y0, x1 - x0) < 8:
        return None
    return (y0, y1, x0, x1), labels[y0:y1, x0:x1] == largest


def crop_overlays(pixels: np.ndarray) -> np.ndarray:
    """The frame cropped to its ultrasound image (see the module docstring); unchanged when none is found."""
    found = ultrasound_region(pixels)
    if found is None:
        return pixels
    (y0, y1, x0, x1), inside = found
    return np.ascontiguousarray(np.where(inside, pixels[y0:y1, x0:x1], 0).astype(np.uint8))


def _has_dicom_region(path: Path) -> bool:
    """True when decoding already cropped this DICOM to a 2-D tissue region (dicom.py rule 4, same condition)."""
    from . import dicom

    ds = dicom.read_dataset(path, pixels=False)
    return any(r.get("RegionSpatialFormat") == dicom.SPATIAL_2D and r.get("RegionDataType") == dicom.TISSUE
               for r in ds.get("SequenceOfUltrasoundRegions", []) or [])


def read_cropped(path: Path, frame: int | None = None) -> np.ndarray:
    """read_frame, then crop_overlays unless a DICOM's own ultrasound region already cropped it."""
    pixels = read_frame(Path(path), frame)
    if Path(path).suffix.lower() in DICOM_SUFFIXES and _has_dicom_region(Path(path)):
        return pixels
    return crop_overlays(pixels)
