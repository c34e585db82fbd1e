"""Find, decode-check and de-duplicate the unlabeled frames of a distillation corpus.

`scan_corpus` walks folders recursively (or takes the files a folder's `manifest.csv` lists;
mask/annotation folders and files are never images), decodes every candidate once (so unreadable
files are found before any model is built), drops exact duplicates by a hash of the decoded pixels, and
attaches a split group to each frame: `case_id` or `source_file` from a `manifest.csv` in the
folder when present (HC18 cases, lung clips), otherwise the file itself (BUSI has no patient ids).
Frames of one group always land on the same side of a train/held-out split.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .readers import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    dicom_frame_count,
    read_frame,
    read_manifest_csv,
    video_frame_indices,
)

# The manifest.csv columns that group frames for every split (this corpus split and `pocus finetune`'s, which
# imports it): the first non-empty one in this order names a frame's group. finetune's order wins (it fixes the
# recorded test splits): a row with both clip_id and source_file is grouped by clip_id. The shared BUSI, HC18 and
# lung manifests have at most one of these columns, so their splits did not change when the two lists became one.
GROUP_COLUMNS = ("case_id", "patient_id", "clip_id", "source_file")


def manifest_group(row: dict[str, str]) -> str:
    """The group id of one manifest.csv row: its first non-empty GROUP_COLUMNS value ("" when none)."""
    return next((row[c] for c in GROUP_COLUMNS if row.get(c)), "")


ANNOTATION_DIRS = {"mask", "masks", "annotation", "annotations", "label", "labels", "gt", "ground_truth"}
ANNOTATION_SUFFIXES = ("_mask", "_annotation", "_seg", "_label")


@dataclass(frozen=True)
class FrameRef:
    """One frame of the corpus: a file, the frame index inside it (DICOM/video) and its split group."""

    path: str
    frame: int | None
    group: str
    crop: bool = False  # --crop-overlays: decoded through data.overlay.read_cropped (dataset.load_frame)


@dataclass
class Corpus:
    """Usable frames plus an account of what was dropped and why."""

    frames: list[FrameRef]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # frames whose pixels the caller asked to keep out
    frame_digests: list[str] = field(default_factory=list)  # pixel_digest of each kept frame, same order

    def write_skipped(self, path: Path) -> None:
        """Write skipped and duplicate files atomically, one `path<TAB>reason` line each (backslash, tab, CR and
        newline escaped as \\\\, \\t, \\r, \\n so a multi-line reason or odd file name stays on its line)."""
        from ..io import atomic_write_text

        def esc(text: object) -> str:
            table = {"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n"}
            return "".join(table.get(ch, ch) for ch in str(text))

        lines = [f"{esc(p)}\t{esc(reason)}" for p, reason in self.skipped]
        lines += [f"{esc(p)}\t{esc(f'duplicate of {orig}')}" for p, orig in self.duplicates]
        atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def _read_manifest(root: Path) -> list[dict[str, str]]:
    """Rows of root/manifest.csv, or [] when the folder has none (UTF-8, paths inside root: read_manifest_csv)."""
    if not root.is_dir() or not (root / "manifest.csv").is_file():
        return []
    return read_manifest_csv(root)


def _manifest_groups(rows: list[dict[str, str]], root: Path) -> dict[str, str]:
    """Map file path (relative to root) -> group id, from the manifest's first non-empty group column."""
    groups: dict[str, str] = {}
    for row in rows:
        rel = row.get("file")
        group = manifest_group(row)
        if rel and group:
            groups[str(Path(rel))] = f"{root.name}:{group}"
    return groups


def _is_annotation(path: Path, root: Path) -> bool:
    """Masks and annotations are labels, not images: skip folders and files named for them."""
    parts = {part.lower() for part in path.relative_to(root).parts[:-1]}
    stem = path.stem.lower()
    return bool(parts & ANNOTATION_DIRS) or stem.endswith(ANNOTATION_SUFFIXES)


def _candidate_files(root: Path, rows: list[dict[str, str]]) -> list[Path]:
    """Image/DICOM/video files under root: those the manifest lists in its `file` column, else all of them."""
    listed = [row["file"] for row in rows if row.get("file")]
    if listed:
        return sorted(root / rel for rel in listed)
    suffixes = IMAGE_SUFFIXES | DICOM_SUFFIXES | VIDEO_SUFFIXES
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not _is_annotation(p, root)
    )


def _frames_of(path: Path, max_video_frames: int) -> list[int | None]:
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        if importlib.util.find_spec("pydicom") is None:
            raise ImportError("DICOM needs pydicom: pip install 'pocus-edge[dicom]'")
        count = dicom_frame_count(path)
        return [None] if count == 1 else list(range(count))
    if suffix in VIDEO_SUFFIXES:
        if importlib.util.find_spec("cv2") is None:
            raise ImportError("video needs OpenCV: pip install 'pocus-edge[video]'")
        return list(video_frame_indices(path, max_video_frames))
    return [None]


def pixel_digest(pixels) -> str:
    """sha256 of a decoded frame (shape + bytes): equal for equal pixels whatever the file name or format."""
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def scan_corpus(roots: list[Path], max_video_frames: int = 32, exclude: set[str] | None = None,
                on_frame: Callable | None = None, crop_overlays: bool = False) -> Corpus:
    """Scan folders (or single files) into a Corpus; raises DataError when nothing usable is found.

    Frames whose pixel digest is in `exclude` (e.g. a labelled test split) are left out and listed in `excluded`.
    `on_frame(root, ref, pixels, digest)` is called for every kept frame (pocus corpus: hashes without a 2nd decode).
    `crop_overlays` marks every frame to be cropped to its ultrasound region when loaded (digests stay uncropped).
    """
    frames: list[FrameRef] = []
    digests: list[str] = []
    excluded: list[str] = []
    skipped: list[tuple[str, str]] = []
    duplicates: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for root in map(Path, roots):
        if not root.exists():
            raise DataError(f"--data {root}: no such file or folder")
        rows = _read_manifest(root)
        files = [root] if root.is_file() else _candidate_files(root, rows)
        groups = _manifest_groups(rows, root)
        for path in files:
            rel = str(path.relative_to(root)) if root.is_dir() else path.name
            try:
                indices = _frames_of(path, max_video_frames)
            except Exception as exc:  # any decoder failure means: skip this file, say why
                skipped.append((str(path), f"{type(exc).__name__}: {exc}"))
                continue
            for index in indices:
                ref = f"{path}" if index is None else f"{path}#{index}"
                try:
                    pixels = read_frame(path, index)
                except Exception as exc:
                    skipped.append((ref, f"{type(exc).__name__}: {exc}"))
                    continue
                digest = pixel_digest(pixels)
                if exclude and digest in exclude:
                    excluded.append(ref)
                    continue
                if digest in seen:
                    duplicates.append((ref, seen[digest]))
                    continue
                seen[digest] = ref
                group = groups.get(rel, f"{root.name}:{rel}")
                frames.append(FrameRef(path=str(path), frame=index, group=group, crop=crop_overlays))
                digests.append(digest)
                if on_frame is not None:
                    on_frame(root, frames[-1], pixels, digest)
    if not frames:
        where = ", ".join(map(str, roots))
        detail = ""
        if skipped:
            detail = f"; {len(skipped)} file(s) could not be read (first: {skipped[0][0]}: {skipped[0][1]})"
        if excluded:
            detail += f"; {len(excluded)} frame(s) left out as images of a held-out (validation/test) split"
        raise DataError(
            f"no usable images found in {where}{detail}. Expected PNG/JPEG/BMP/TIFF, DICOM or video files "
            "(searched recursively)."
        )
    return Corpus(frames=frames, skipped=skipped, duplicates=duplicates, excluded=excluded, frame_digests=digests)


def split_by_group(frames: list[FrameRef], held_out_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic train/held-out split by hashing each frame's group with the seed."""
    if held_out_fraction <= 0:
        return list(frames), []
    train, held_out = [], []
    for ref in frames:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{ref.group}".encode()).digest()[:8], "big")
        (held_out if h / 2**64 < held_out_fraction else train).append(ref)
    return train, held_out
