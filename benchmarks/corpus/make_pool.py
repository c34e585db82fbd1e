"""Split BUSI + HC18 + lung into a selection pool and a fixed held-out set, by split group (issue 18 section 3).

Usage: .venv/bin/python benchmarks/corpus/make_pool.py [--data-root ../shared/data] [--out benchmarks/corpus/work]

1. Scan the three folders exactly as `pocus distill` does (manifest.csv, exact duplicates dropped) minus the
   validation/test images of the downstream BUSI and HC18 fine-tunes (seed 0, seg and cls), as
   benchmarks/distill/r2_real_data.sh leaves them out.
2. Split by the corpus's own group key (HC18 case, lung source clip, BUSI file; data/corpus.py) with
   `split_by_group(frames, --held-out-fraction, --seed)`: no patient/clip is on both sides.
3. Write OUT/pool/<dataset>/ and OUT/heldout/<dataset>/ as symlink trees that keep the dataset folder names, the
   relative paths and a manifest.csv of the side's rows, so the loader computes the same group keys there.
4. Verify by scanning both trees again: same frames, same groups and pixels as the originals, no group and no
   pixel digest on both sides. Writes OUT/pool.json (counts, groups, settings, checks) and fails on any mismatch.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

from pocus_edge.data.corpus import FrameRef, scan_corpus, split_by_group
from pocus_edge.data.readers import read_manifest_csv
from pocus_edge.finetune.data import eval_split_digests

DATASETS = ("busi", "hc18", "lung")
EVAL_SPLIT_DATASETS = ("busi", "hc18")  # as r2_real_data.sh: --exclude-eval-splits busi hc18 (seed 0)
SIDES = ("pool", "heldout")


def frame_rows(root: Path, exclude: set[str] | None = None) -> tuple[list[tuple[str, str, str]], int]:
    """(relative path, group, pixel digest) of every frame the distiller reads in root, and the frames excluded."""
    corpus = scan_corpus([root], exclude=exclude)
    rows = [(str(Path(f.path).relative_to(root)), f.group, digest)
            for f, digest in zip(corpus.frames, corpus.frame_digests, strict=True)]
    return rows, len(corpus.excluded)


def scan_originals(data_root: Path) -> tuple[dict, dict]:
    """{dataset: [(rel, group, digest)]} of the usable frames, and {dataset: frames left out as eval images}."""
    exclude: set[str] = set()
    for name in EVAL_SPLIT_DATASETS:
        exclude |= eval_split_digests(data_root / name, ("segmentation", "classification"), 0)
    frames: dict[str, list[tuple[str, str, str]]] = {}
    left_out: dict[str, int] = {}
    for name in DATASETS:  # one scan per folder, as distill scans each --data (duplicates across folders: below)
        frames[name], left_out[name] = frame_rows(data_root / name, exclude)
    seen: set[str] = set()
    for name in DATASETS:  # a frame whose pixels another dataset already has would sit on both sides
        unique = [row for row in frames[name] if row[2] not in seen]
        seen |= {row[2] for row in unique}
        frames[name] = unique
    return frames, left_out


def split_frames(frames: dict, fraction: float, seed: int) -> dict:
    """{side: {dataset: [(rel, group, digest)]}} split by group with the corpus's split_by_group."""
    sides: dict[str, dict[str, list]] = {side: {} for side in SIDES}
    for name, rows in frames.items():
        refs = [FrameRef(path=rel, frame=None, group=group) for rel, group, _ in rows]
        train, held = split_by_group(refs, fraction, seed)
        keep_pool = {r.path for r in train}
        sides["pool"][name] = [row for row in rows if row[0] in keep_pool]
        sides["heldout"][name] = [row for row in rows if row[0] not in keep_pool]
        assert len(held) == len(sides["heldout"][name])
    return sides


def write_tree(out: Path, data_root: Path, name: str, rows: list) -> None:
    """OUT/<name>/: symlinks to the original files at the same relative paths + manifest.csv of these rows."""
    target = out / name
    target.mkdir(parents=True)
    wanted = {rel for rel, _, _ in rows}
    for rel in sorted(wanted):
        link = target / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((data_root / name / rel).resolve(), link)
    source = data_root / name / "manifest.csv"
    if source.is_file():
        manifest = read_manifest_csv(data_root / name)
        fields = list(manifest[0].keys()) if manifest else ["file"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in manifest if r.get("file") and str(Path(r["file"])) in wanted)
        (target / "manifest.csv").write_text(buffer.getvalue(), encoding="utf-8")


def verify(out: Path, sides: dict) -> dict:
    """Scan the written trees as distill will; every frame keeps its group and pixels; the sides share nothing."""
    seen: dict[str, dict[str, set]] = {}
    problems: list[str] = []
    for side in SIDES:
        seen[side] = {"groups": set(), "digests": set()}
        for name, rows in sides[side].items():
            got = set(frame_rows(out / side / name)[0])
            if got != set(rows):
                problems.append(f"{side}/{name}: rescan differs ({len(got ^ set(rows))} frame(s) differ)")
            seen[side]["groups"] |= {g for _, g, _ in got}
            seen[side]["digests"] |= {d for _, _, d in got}
    shared_groups = seen["pool"]["groups"] & seen["heldout"]["groups"]
    shared_pixels = seen["pool"]["digests"] & seen["heldout"]["digests"]
    if shared_groups:
        problems.append(f"{len(shared_groups)} group(s) on both sides, e.g. {sorted(shared_groups)[0]}")
    if shared_pixels:
        problems.append(f"{len(shared_pixels)} pixel digest(s) on both sides")
    return {"groups_kept_on_rescan": not any("rescan" in p for p in problems), "shared_groups": len(shared_groups),
            "shared_pixel_digests": len(shared_pixels), "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("POCUS_SHARED_DATA", "../shared/data")))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/corpus/work"))
    parser.add_argument("--held-out-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any((args.out / side).exists() for side in SIDES):
        print(f"{args.out}/pool or heldout exists; remove both to rebuild", file=sys.stderr)
        return 2
    frames, left_out = scan_originals(args.data_root)
    sides = split_frames(frames, args.held_out_fraction, args.seed)
    for side in SIDES:
        for name, rows in sides[side].items():
            write_tree(args.out / side, args.data_root, name, rows)
    checks = verify(args.out, sides)
    record = {
        "data_root": str(args.data_root.resolve()), "held_out_fraction": args.held_out_fraction, "seed": args.seed,
        "eval_split_images_left_out": left_out,
        "frames": {side: {n: len(r) for n, r in sides[side].items()} for side in SIDES},
        "groups": {side: {n: len(Counter(g for _, g, _ in r)) for n, r in sides[side].items()} for side in SIDES},
        "checks": checks,
    }
    (args.out / "pool.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 1 if checks["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
