"""Calibration and parity images: read with the runtime's own reader, split so they never overlap.

Parity must be judged on images the quantiser never saw: the calibration folder is split by group
(case/patient/clip id from manifest.csv where present) into a calibration part and a held-out part.
Without any folder, parity uses synthetic phantoms and says so in parity.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)
MIN_CALIB_WARN = 100


@dataclass
class ImageSet:
    """Gray frames in [0, 1] with where they came from (recorded in parity.json)."""

    images: list[np.ndarray]
    names: list[str]
    origin: str


def _read_refs(refs) -> tuple[list[np.ndarray], list[str]]:
    from ..data.readers import read_frame
    from ..runtime.images import to_gray01

    images, names = [], []
    for ref in refs:
        images.append(to_gray01(read_frame(Path(ref.path), ref.frame), ref.path))
        names.append(ref.path if ref.frame is None else f"{ref.path}#{ref.frame}")
    return images, names


def _subsample(refs: list, count: int, seed: int) -> list:
    if len(refs) <= count:
        return list(refs)
    rng = np.random.default_rng(seed)
    keep = sorted(rng.choice(len(refs), size=count, replace=False))
    return [refs[i] for i in keep]


def phantom_set(count: int, seed: int = 1000) -> ImageSet:
    """Synthetic speckle phantoms (the fallback when no folder is given)."""
    from ..data.phantoms import make_phantom
    from ..runtime.images import to_gray01

    images = [make_phantom(seed + i, (256, 256), "sector" if i % 2 == 0 else "linear").image for i in range(count)]
    return ImageSet([to_gray01(im) for im in images], [f"phantom:{seed + i}" for i in range(count)],
                    "synthetic phantoms")


def calibration_and_parity(calib_dir: Path | None, parity_dir: Path | None, num_calib: int, num_parity: int,
                           seed: int = 0) -> tuple[ImageSet | None, ImageSet]:
    """(calibration set or None, parity set); raises DataError on empty or unreadable folders."""
    from ..data.corpus import scan_corpus, split_by_group

    calib: ImageSet | None = None
    held_out: list = []
    if calib_dir is not None:
        corpus = _scan(calib_dir, "--calib-data", scan_corpus)
        train, held_out = split_by_group(corpus.frames, 0.2 if parity_dir is None else 0.0, seed)
        if not train:
            raise DataError(f"--calib-data {calib_dir}: too few images to keep calibration and parity apart")
        images, names = _read_refs(_subsample(train, num_calib, seed))
        if len(images) < MIN_CALIB_WARN:
            log.warning("calibrating on only %d images (fewer than %d); int8 ranges may be poor", len(images),
                        MIN_CALIB_WARN)
        calib = ImageSet(images, names, str(calib_dir))
    if parity_dir is not None:
        corpus = _scan(parity_dir, "--parity-data", scan_corpus)
        images, names = _read_refs(_subsample(corpus.frames, num_parity, seed))
        return calib, ImageSet(images, names, str(parity_dir))
    if held_out:
        images, names = _read_refs(_subsample(held_out, num_parity, seed))
        return calib, ImageSet(images, names, f"{calib_dir} (held out from calibration)")
    return calib, phantom_set(num_parity)


def _scan(folder: Path, flag: str, scan):
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{flag} {folder}: no such folder")
    try:
        return scan([folder])
    except DataError as exc:
        raise DataError(f"{flag} {folder}: {exc}")
