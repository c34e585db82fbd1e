"""DICOM Segmentation (SEG) objects for predictions on DICOM inputs, built with highdicom (the `dicom` extra) from
typed parts, so a PACS can store the result beside its source image.

Contract (README "DICOM"):
- One BINARY SEG per DICOM input, at the stored frame size: the mask of the cropped ultrasound region is pasted
  back at its place, zero elsewhere, so the SEG lies pixel for pixel on its source. Every frame is kept (no empty
  frames dropped).
- It references the source (Study, Series, SOP Instance UID) and names the algorithm: AlgorithmName = the
  bundle's name, AlgorithmVersion = the pocus-edge version, family Artificial Intelligence, parameters
  bundle_sha256 (the verified bundle digest), target and precision. Device serial number = the bundle digest.
- Segments: a binary model gives one, labelled with the manifest's foreground label (the last label, e.g. lesion);
  a multi-class model one per class 1..K-1 (class 0 is background). Property category and type are the generic
  SNOMED CT "Tissue": a label's anatomy is not known to the bundle. SegmentDescription names label, bundle and version.
- Cannot: a multi-frame (cine) source. Ultrasound cine loops have no patient coordinate system (Frame of
  Reference), and highdicom 0.28 then encodes single-frame sources only (highdicom issue #284); a hand-patched
  per-frame reference would bypass its validation. `seg_unsupported` says so; pocus predict records the reason in
  results.json (and still writes the per-frame PNG masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.dicom import DICOM_EXTRA, DecodedFrame
from ..errors import PocusError
from ..io import atomic_write

SEG_SERIES_NUMBER = 1000  # kept apart from the scanner's own series numbers
CINE_UNSUPPORTED = ("multi-frame (cine) source: highdicom 0.28 cannot reference the frames of a cine loop without a "
                    "patient coordinate system (highdicom issue #284); the per-frame PNG masks are written")


def require_highdicom(what: str) -> None:
    """Refuse early (before any model runs) when highdicom is not installed."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise PocusError(f"{what}: writing DICOM SEG needs highdicom; {DICOM_EXTRA}, or pass --no-dicom-seg")


def seg_unsupported(source: Any) -> str | None:
    """Why no SEG can be written for this source dataset, or None when one can."""
    return CINE_UNSUPPORTED if int(source.get("NumberOfFrames", 1) or 1) > 1 else None


def foreground_labels(labels: list[str], channels: int) -> list[str]:
    """Segment labels in segment-number order: one for a binary (1-channel) model, classes 1..K-1 otherwise."""
    if channels == 1:
        return [labels[-1] if labels else "foreground"]
    return [labels[k] if k < len(labels) else f"class {k}" for k in range(1, channels)]


def full_frame(mask: np.ndarray, frame: DecodedFrame) -> np.ndarray:
    """The mask of a (possibly cropped) frame placed into a zero frame of the stored size."""
    if frame.source_region is None:
        return mask.astype(np.uint8)
    out = np.zeros(frame.stored_shape, dtype=np.uint8)
    x0, y0, x1, y1 = frame.source_region
    out[y0:y1 + 1, x0:x1 + 1] = mask
    return out


def build_seg(source: Any, masks: list[np.ndarray], frames: list[DecodedFrame], predictor: Any,
              channels: int) -> Any:
    """highdicom Segmentation of `source` (a pydicom Dataset; pixel data not needed) from one mask per frame
    (class indices, at the decoded frame's size)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    manifest = predictor.manifest
    digest = predictor.digest or "unknown"
    algorithm = hd.AlgorithmIdentificationSequence(
        name=str(manifest["name"])[:64], family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source="pocus-edge",
        parameters={"bundle_sha256": digest, "target": manifest["target"], "precision": manifest["precision"]})
    descriptions = []
    for number, label in enumerate(foreground_labels(list(manifest["labels"]), channels), start=1):
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=label[:64], segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)
        description.SegmentDescription = f"{label} by {manifest['name']} (pocus-edge {__version__})"[:64]
        descriptions.append(description)
    pixels = np.stack([full_frame(m, f) for m, f in zip(masks, frames, strict=True)])
    return hd.seg.Segmentation(
        source_images=[source], pixel_array=pixels if len(masks) > 1 else pixels[0],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="pocus-edge", manufacturer_model_name=str(manifest["name"])[:64],
        software_versions=__version__, device_serial_number=digest[:64], omit_empty_frames=False,
        content_label="POCUS_EDGE", content_description=f"{manifest['name']} {manifest['target']} "
        f"{manifest['precision']} segmentation"[:64])


def write_seg(path: Path, source: Any, masks: list[np.ndarray], frames: list[DecodedFrame], predictor: Any,
              channels: int) -> str:
    """Write the SEG to `path` (atomically); returns its SOP Instance UID."""
    seg = build_seg(source, masks, frames, predictor, channels)
    atomic_write(Path(path), lambda p: seg.save_as(p, enforce_file_format=True))
    return str(seg.SOPInstanceUID)
