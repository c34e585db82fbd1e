"""`pocus corpus scan`: what the distiller would read, frame by frame, with exact and near duplicates.

The frames are exactly `scan_corpus`'s (same folders, manifest rules, decoders, exact-duplicate removal by pixel
digest); each is decoded once and gets its pixel sha256 (the digest the distiller de-duplicates by), the sha256
and byte size of its file, its height and width, its source folder (the --data entry it came from) and a 64-bit
DCT perceptual hash (data/phash.py). Near duplicates are found greedily in scan order: a frame within
`near_threshold` bits of an earlier kept frame is marked `near_duplicate_of` it (the distiller still reads it;
`pocus corpus select` removes it). With `crop_overlays` the hash is taken on the cropped frame (data/overlay.py).
corpus.json is strict JSON (no NaN), written atomically; `schema` names its version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..cli_common import console
from ..io import atomic_write_json, sha256_file
from .corpus import Corpus, FrameRef, scan_corpus
from .frame_list import ref_text
from .phash import MAX_THRESHOLD, near_duplicates, phash

SCHEMA = "pocus-corpus/1"
DEFAULT_NEAR_THRESHOLD = 6


def progress_bar(quiet: bool) -> Progress:
    """The rich progress bar every corpus step shows (silent with --quiet), on stderr: `--json -` owns stdout."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=quiet)


@dataclass
class ScannedFrames:
    """The scan's Corpus plus, per kept frame (same order), what corpus.json records."""

    corpus: Corpus
    roots: list[str] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    shapes: list[tuple[int, int]] = field(default_factory=list)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha256, bytes)


def scan_frames(roots: list[Path], max_video_frames: int = 32, crop: bool = False, quiet: bool = True,
                exclude: set[str] | None = None, file_hashes: bool = True) -> ScannedFrames:
    """scan_corpus with a perceptual hash of every kept frame (of its cropped pixels with `crop`).

    `file_hashes=False` skips the files' sha256 (corpus.json's file_sha256; select does not need it).
    """
    from .overlay import crop_overlays, read_cropped
    from .readers import DICOM_SUFFIXES

    found = ScannedFrames(Corpus(frames=[]))

    def visit(root: Path, ref: FrameRef, pixels: np.ndarray, digest: str) -> None:
        if crop:  # a DICOM with its own region comes cropped already; read_cropped knows that rule
            dicom = Path(ref.path).suffix.lower() in DICOM_SUFFIXES
            pixels = read_cropped(Path(ref.path), ref.frame) if dicom else crop_overlays(pixels)
        found.roots.append(str(root))
        found.hashes.append(phash(pixels))
        found.shapes.append((int(pixels.shape[0]), int(pixels.shape[1])))
        if file_hashes and ref.path not in found.files:
            found.files[ref.path] = (sha256_file(Path(ref.path)), Path(ref.path).stat().st_size)
        bar.advance(task)

    with progress_bar(quiet) as bar:
        task = bar.add_task("scan", total=None)
        found.corpus = scan_corpus(list(roots), max_video_frames=max_video_frames, exclude=exclude, on_frame=visit)
    return found


def _per_folder(scanned: ScannedFrames, near: list, roots: list[str]) -> dict[str, dict[str, int]]:
    counts = {r: {"frames": 0, "near_duplicates": 0, "exact_duplicates": 0, "skipped": 0} for r in roots}
    for root, dup in zip(scanned.roots, near, strict=True):
        counts[root]["frames"] += 1
        counts[root]["near_duplicates"] += dup is not None

    def owner(ref: str) -> str | None:
        path = Path(ref.rpartition("#")[0] if "#" in ref else ref)
        return next((r for r in roots if Path(r) == path or Path(r) in path.parents), None)

    for kind, items in (("exact_duplicates", scanned.corpus.duplicates), ("skipped", scanned.corpus.skipped)):
        for ref, _ in items:
            root = owner(ref)
            if root is not None:
                counts[root][kind] += 1
    for item in counts.values():
        item["unique_frames"] = item["frames"] - item["near_duplicates"]
    return counts


def scan_report(roots: list[Path], near_threshold: int = DEFAULT_NEAR_THRESHOLD, max_video_frames: int = 32,
                crop: bool = False, quiet: bool = True, scanned: ScannedFrames | None = None) -> dict:
    """corpus.json's content (see the module docstring)."""
    scanned = scanned or scan_frames(roots, max_video_frames, crop, quiet)
    corpus = scanned.corpus
    near = near_duplicates(scanned.hashes, near_threshold) if near_threshold >= 0 else [None] * len(scanned.hashes)
    refs = [ref_text(f) for f in corpus.frames]
    frames = []
    for i, (ref, frame) in enumerate(zip(refs, corpus.frames, strict=True)):
        sha, size = scanned.files[frame.path]
        frames.append({
            "ref": ref, "path": frame.path, "frame": frame.frame, "group": frame.group, "folder": scanned.roots[i],
            "pixel_sha256": corpus.frame_digests[i], "file_sha256": sha, "file_bytes": size,
            "height": scanned.shapes[i][0], "width": scanned.shapes[i][1], "phash": f"{scanned.hashes[i]:016x}",
            "near_duplicate_of": refs[near[i][0]] if near[i] else None,
            "hamming": near[i][1] if near[i] else None})
    root_names = [str(r) for r in roots]
    near_count = sum(d is not None for d in near)
    return {
        "schema": SCHEMA,
        "settings": {"data": root_names, "max_video_frames": max_video_frames, "near_threshold": near_threshold,
                     "hash": "dct-phash-64 (32x32 bilinear, 8x8 DCT, median)", "crop_overlays": crop},
        "summary": {"frames": len(frames), "unique_frames": len(frames) - near_count,
                    "exact_duplicates_removed": len(corpus.duplicates), "near_duplicates": near_count,
                    "skipped": len(corpus.skipped), "files": len(scanned.files),
                    "per_folder": _per_folder(scanned, near, root_names)},
        "frames": frames,
        "exact_duplicates": [{"ref": ref, "duplicate_of": orig} for ref, orig in corpus.duplicates],
        "skipped": [{"ref": ref, "reason": reason} for ref, reason in corpus.skipped],
    }


def write_report(out: Path, report: dict) -> Path:
    """Write corpus.json atomically (strict JSON)."""
    return atomic_write_json(Path(out), report)


def check_threshold(value: int, flag: str = "--near-threshold") -> int:
    """The near-duplicate Hamming threshold, 0..MAX_THRESHOLD bits, or -1 (no near-duplicate removal)."""
    from ..errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_THRESHOLD:
        raise ConfigError(f"{flag} {value!r}: expected an integer number of bits between 0 and {MAX_THRESHOLD} "
                          "(0 = identical hashes only), or -1 to keep near duplicates")
    return value

