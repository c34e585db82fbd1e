"""Labelled ultrasound for fine-tuning: folder layouts, deterministic grouped splits, label fractions.

Layouts: `images/` + `masks/` + `manifest.csv` (columns file, mask, label, and a group id column
case_id / patient_id / clip_id / source_file when frames share a patient), as ../shared/data/busi and
hc18; or class sub-folders (`DATA/benign/*.png`) for classification. Splits hash each group id with the
seed, so they are reproducible and frames of one group never straddle splits; classification splits are
stratified by class. Label fractions take a deterministic subset of the training split only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.corpus import manifest_group
from ..data.readers import read_frame_checked, read_manifest_csv
from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    image: str
    mask: str | None
    label: str | None
    group: str
    pixel_size_mm: float | None = None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_samples(root: Path, task: str) -> list[Sample]:
    """All usable samples of a folder for `task` ('segmentation' or 'classification'); DataError if none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    samples: list[Sample] = []
    if (root / "manifest.csv").is_file():
        for row in read_manifest_csv(root):
            if row.get("split") == "test_unlabeled":
                continue
            group = manifest_group(row) or row["file"]  # GROUP_COLUMNS order: data/corpus.py
            mask = row.get("mask") or None
            samples.append(Sample(str(root / row["file"]), str(root / mask) if mask else None, row.get("label") or None,
                                  group, _float(row.get("resized_pixel_size_mm") or row.get("pixel_size_mm"))))
    else:
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("masks", "images")):
            for image in sorted(class_dir.iterdir()):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append(Sample(str(image), None, class_dir.name, str(image.relative_to(root))))
    if task == "segmentation":
        missing = [s.image for s in samples if not s.mask]
        if missing:
            raise DataError(f"--data {root}: {len(missing)} image(s) have no mask (first: {missing[0]}); "
                            "segmentation needs a mask column in manifest.csv")
        absent = [s.mask for s in samples if not Path(s.mask).is_file()]
        if absent:
            raise DataError(f"--data {root}: mask file {absent[0]} does not exist ({len(absent)} missing)")
    else:
        labels = {s.label for s in samples if s.label}
        if any(s.label is None for s in samples):
            raise DataError(f"--data {root}: some images have no label (manifest.csv needs a label column)")
        if len(labels) < 2:
            raise DataError(f"--data {root}: classification needs at least two classes, found {sorted(labels)}")
    if not samples:
        raise DataError(f"--data {root}: no images found (expected manifest.csv or class sub-folders)")
    return samples


def _rank(seed: int, text: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big") / 2**64


def split_samples(samples: list[Sample], seed: int, stratify: bool,
                  fractions: tuple[float, float] = (0.7, 0.15)) -> dict[str, list[Sample]]:
    """Deterministic train/val/test by group (70/15/15), stratified by label when asked."""
    strata: dict[str | None, list[str]] = {}
    for s in samples:
        key = s.label if stratify else None
        if s.group not in strata.setdefault(key, []):
            strata[key].append(s.group)
    assignment: dict[str, str] = {}
    for groups in strata.values():
        ordered = sorted(groups, key=lambda g: _rank(seed, g))
        n = len(ordered)
        n_train, n_val = int(round(n * fractions[0])), int(round(n * fractions[1]))
        for i, g in enumerate(ordered):
            assignment.setdefault(g, "train" if i < n_train else "val" if i < n_train + n_val else "test")
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for s in samples:
        out[assignment[s.group]].append(s)
    for name in SPLITS:
        if not out[name]:
            raise DataError(f"too few images/groups for a {name} split ({len(samples)} samples)")
    return out


def mask_label(samples: list[Sample]) -> str:
    """The name of a binary mask's foreground: the manifest's label when every image carries the same one (HC18:
    fetal_head); per-image class labels (BUSI: benign / malignant / normal) name the image, not the mask."""
    names = {s.label for s in samples}
    return names.pop() if len(names) == 1 and None not in names else "foreground"


def label_fraction(train: list[Sample], fraction: float, seed: int, stratify: bool) -> list[Sample]:
    """The first `fraction` of each class's training groups in hash order (nested across fractions)."""
    if not 0 < fraction <= 1:
        raise DataError(f"--label-fraction {fraction}: must lie in (0, 1]")
    if fraction == 1:
        return list(train)
    keep: set[str] = set()
    strata: dict[str | None, list[str]] = {}
    for s in train:
        key = s.label if stratify else None
        if s.group not in strata.setdefault(key, []):
            strata[key].append(s.group)
    for groups in strata.values():
        ordered = sorted(groups, key=lambda g: _rank(seed + 7919, g))
        keep.update(ordered[:max(1, int(round(len(ordered) * fraction)))])
    return [s for s in train if s.group in keep]


def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """(gray uint8 image, binary uint8 mask or None); DataError naming the file when one does not decode or
    the sizes disagree."""
    image = read_frame_checked(Path(sample.image), "image")
    if sample.mask is None:
        return image, None
    mask = (read_frame_checked(Path(sample.mask), "mask") > 127).astype(np.uint8)
    if mask.shape != image.shape:
        raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{image.shape[1]}x{image.shape[0]}")
    return image, mask


def check_decodable(samples: list[Sample]) -> None:
    """Decode every image and mask once, so a truncated or mismatched file stops the run before training starts
    (a broken test-split mask was otherwise found only when the trained model was evaluated)."""
    for sample in samples:
        load_pair(sample)


def eval_split_digests(root: Path, tasks: tuple[str, ...], seed: int) -> set[str]:
    """Pixel digests of the validation and test images `pocus finetune` makes of ROOT for each task (seed as given).

    A distillation or KD transfer set drops these, so no image the downstream evaluation is judged on is trained
    on, even under another name. Tasks the folder cannot serve (no masks, no labels) are skipped; a folder that
    serves none (a typo, an unlabelled folder) is a DataError, never an empty set.
    """
    from ..data.corpus import pixel_digest
    from ..data.readers import read_frame

    digests: set[str] = set()
    problems: list[str] = []
    for task in tasks:
        try:
            splits = split_samples(read_samples(Path(root), task), seed, task == "classification")
        except DataError as e:
            problems.append(str(e))
            continue
        digests |= {pixel_digest(read_frame(Path(s.image))) for name in ("val", "test") for s in splits[name]}
    if len(problems) == len(tasks):  # a typo or an unlabelled folder would otherwise leave nothing out, silently
        raise DataError(f"{root}: no labelled splits to leave out ({'; '.join(problems)}); pass the folder "
                        "pocus finetune trains on")
    return digests


def eval_images_of(folders: list[str], seed: int) -> set[str]:
    """Pixel digests of every seg and cls validation/test image of FOLDERS: what `--exclude-eval-splits` leaves out."""
    from ..task_names import TRAINABLE_TASKS

    digests: set[str] = set()
    for folder in folders:
        digests |= eval_split_digests(Path(folder), tuple(TRAINABLE_TASKS.values()), seed)
    return digests
