"""The floor of `pocus eval --measure ellipse`: fit the HC18 ground-truth MASKS and compare with head_circumference_mm.

Usage: .venv/bin/python benchmarks/measure/gt_floor.py [--data ../shared/data/hc18] [--out benchmarks/measure]
Writes gt_floor.json (summary + one row per image). A model trained on these masks cannot beat this on average
unless it learns something the masks do not show. Also records two alternatives the docstring of
pocus_edge/runtime/measure.py argues against: an isotropic spacing (resized_pixel_size_mm on both axes) and the
second moments of the filled region instead of the boundary fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pocus_edge.data.readers import read_manifest_csv
from pocus_edge.finetune.data import load_pair, read_samples, split_samples
from pocus_edge.finetune.measure_eval import read_truth
from pocus_edge.runtime.measure import (
    conic_from_moments,
    ellipse_geometry,
    fill_holes,
    largest_component,
    measure_mask,
    ramanujan_circumference,
)


def _moments_mm(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    geometry = ellipse_geometry(conic_from_moments(fill_holes(largest_component(mask)[0]), spacing))
    assert geometry is not None
    return ramanujan_circumference(geometry["semi_major"], geometry["semi_minor"])


def _stats(diff: np.ndarray) -> dict[str, float]:
    return {"mean_abs_diff_mm": float(np.abs(diff).mean()), "sd_abs_diff_mm": float(np.abs(diff).std(ddof=1)),
            "mean_diff_mm": float(diff.mean()), "max_abs_diff_mm": float(np.abs(diff).max()),
            "within_3mm": float((np.abs(diff) <= 3).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hc18"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    samples = read_samples(args.data, "segmentation")
    pixel_size = {str(args.data / r["file"]): float(r["pixel_size_mm"]) for r in read_manifest_csv(args.data)}
    split_of = {s.image: name for name, members in split_samples(samples, 0, False).items() for s in members}
    truth = read_truth(args.data, samples, "ellipse")
    rows = []
    for s in samples:
        _, mask = load_pair(s)
        t = truth[s.image]
        fit = measure_mask(mask, t.spacing, ["ellipse"])["ellipse"]
        iso = measure_mask(mask, (t.spacing[1], t.spacing[1]), ["ellipse"])["ellipse"]
        rows.append({"image": Path(s.image).name, "split": split_of[s.image], "hc_true_mm": t.circumference_mm,
                     "source_pixel_size_mm": pixel_size[s.image],
                     "pixel_spacing_mm": list(t.spacing), "hc_gt_mask_mm": fit["mm"]["circumference"],
                     "method": fit["method"], "touches_border": fit["touches_border"],
                     "hc_isotropic_mm": iso["mm"]["circumference"], "hc_moments_mm": _moments_mm(mask, t.spacing)})
    true = np.array([r["hc_true_mm"] for r in rows])
    source = np.array([r["source_pixel_size_mm"] for r in rows])
    diff = np.array([r["hc_gt_mask_mm"] for r in rows]) - true
    radial = diff / (2 * np.pi * source)
    summary = {
        "images": len(rows), "boundary_fit_per_axis_spacing": _stats(diff),
        "per_split": {name: _stats(diff[[r["split"] == name for r in rows]]) for name in ("train", "val", "test")},
        "isotropic_resized_spacing": _stats(np.array([r["hc_isotropic_mm"] for r in rows]) - true),
        "region_moments": _stats(np.array([r["hc_moments_mm"] for r in rows]) - true),
        # the masks' edge lies outside the annotated ellipse by a constant in source pixels (the filled outline)
        "radial_offset_source_px": {"mean": float(radial.mean()), "sd": float(radial.std(ddof=1))},
        "without_radial_offset": _stats(diff - 2 * np.pi * radial.mean() * source),
        "fallback_to_moments": sum(r["method"] != "direct_least_squares_boundary" for r in rows),
        "touching_border": sum(r["touches_border"] for r in rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    kept = ("image", "split", "hc_true_mm", "hc_gt_mask_mm", "touches_border")
    lines = ",\n".join(json.dumps({k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in kept})
                        for r in rows)
    head = json.dumps({"data": str(args.data), "summary": summary}, indent=1)[:-2]
    (args.out / "gt_floor.json").write_text(f'{head},\n "rows": [\n{lines}\n]}}\n')
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
