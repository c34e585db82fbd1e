"""Tables (Markdown + JSON) and the Pareto plot of benchmarks/kd from the runs' metrics.json and latency rows.

Usage: .venv/bin/python benchmarks/kd/report_kd.py [RUNS_DIR] [--latency benchmarks/kd/latency.json]
Writes benchmarks/kd/results.json, results.md and (with latency rows) pareto.png + pareto.json.
A row's mean ± std is over the seeds present; the seed count is printed beside it, never hidden.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUDENT_ROWS = ("mobilenetv3_large_100", "efficientnet_b0", "mobilenetv4_conv_small-half")  # -half: 4 decoder widths
NAME = re.compile(r"^(?P<ds>hc18|busi)-(?P<row>.+)-s(?P<seed>\d+)$")


def collect(runs: Path) -> dict[str, dict[int, dict]]:
    """{row name: {seed: metrics}} for every finished run (metrics.json present)."""
    rows: dict[str, dict[int, dict]] = {}
    for metrics in sorted(runs.glob("*/metrics.json")):
        m = NAME.match(metrics.parent.name)
        if not m:
            continue
        data = json.loads(metrics.read_text())
        rows.setdefault(f"{m['ds']}-{m['row']}", {})[int(m["seed"])] = data
    return rows


def summarise(rows: dict[str, dict[int, dict]]) -> dict[str, dict]:
    out = {}
    for name, seeds in rows.items():
        dice = [seeds[s]["test"]["dice"] for s in sorted(seeds)]
        hd = [seeds[s]["test"].get("hd95_mm") for s in sorted(seeds)]
        hd = [h for h in hd if h is not None]
        out[name] = {"seeds": sorted(seeds), "test_dice": dice, "dice_mean": statistics.fmean(dice),
                     "dice_std": statistics.stdev(dice) if len(dice) > 1 else None,
                     "hd95_mm_mean": statistics.fmean(hd) if hd else None,
                     "train_images": seeds[min(seeds)]["train_images"],
                     "wall_time_s": [seeds[s]["wall_time_s"] for s in sorted(seeds)]}
    return out


def fmt(row: dict | None) -> str:
    if row is None:
        return "not run"
    std = f" ± {row['dice_std']:.4f}" if row["dice_std"] is not None else ""
    return f"{row['dice_mean']:.4f}{std} (n={len(row['seeds'])})"


def markdown(summary: dict[str, dict]) -> str:
    lines = ["## Compression (HC18, all training labels, 128 px)", "",
             "| model | labels only | pocus kd (HC18 frames + lung as transfer set) |", "|---|---|---|",
             f"| U-Net-ResNet50 (teacher) | {fmt(summary.get('hc18-teacher-r50'))} | - |"]
    for arch in STUDENT_ROWS:
        lines.append(f"| U-Net-{arch} | {fmt(summary.get(f'hc18-{arch}-labels'))} | "
                     f"{fmt(summary.get(f'hc18-{arch}-kd'))} |")
    control = summary.get("hc18-mobilenetv3_large_100-labels540")
    lines += ["", f"Compute-matched control, MobileNetV3-Large U-Net on labels only for 540 steps (as many as kd's "
              f"300 + 240): {fmt(control)}"]
    lines += paired(summary)
    lines += ["", "## Label-efficient (10 % labels, MobileNetV3-Large U-Net student)", "",
              "| data | teacher (R50, 10 %) | scratch | task-agnostic KD (hidden only) | TS-KD (hidden + output) |",
              "|---|---|---|---|---|"]
    for ds in ("busi", "hc18"):
        cells = [summary.get(f"{ds}-10pct-{r}") for r in ("teacher-r50", "mobilenetv3_large_100-scratch",
                                                           "mobilenetv3_large_100-agnostic",
                                                           "mobilenetv3_large_100-tskd")]
        lines.append(f"| {ds} | " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def paired(summary: dict[str, dict]) -> list[str]:
    """Per-seed comparisons of the kd student (same seed = same teacher, split and initialisation) and the goal check.

    Goal (issue 14): kd Dice >= 0.98 x teacher, and kd above labels-only by more than the seeds' std (the larger std
    of the two rows). Only seeds present in every row compared are used, and their number is printed.
    """
    lines = []
    teacher = summary.get("hc18-teacher-r50")
    for arch in STUDENT_ROWS:
        kd = summary.get(f"hc18-{arch}-kd")
        if teacher is None or kd is None:
            continue
        by_seed = {name: dict(zip(row["seeds"], row["test_dice"], strict=True))
                   for name, row in (("teacher", teacher), ("kd", kd),
                                     ("labels", summary.get(f"hc18-{arch}-labels")),
                                     ("control", summary.get(f"hc18-{arch}-labels540"))) if row is not None}
        lines += ["", f"Paired by seed, U-Net-{arch} (kd minus the other row, same seed):", "",
                  "| comparison | seeds | per seed | mean ± std |", "|---|---|---|---|"]
        for other, label in (("teacher", "kd / teacher (ratio)"), ("labels", "kd - labels only (240 steps)"),
                             ("control", "kd - labels only, compute-matched (540 steps)")):
            if other not in by_seed:
                continue
            seeds = sorted(set(by_seed["kd"]) & set(by_seed[other]))
            if not seeds:
                continue
            vals = [by_seed["kd"][s] / by_seed[other][s] if other == "teacher" else by_seed["kd"][s] - by_seed[other][s]
                    for s in seeds]
            std = f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else ""
            shown = ", ".join(f"{v:.4f}" if other == "teacher" else f"{v:+.4f}" for v in vals)
            lines.append(f"| {label} | {', '.join(map(str, seeds))} | {shown} | {statistics.fmean(vals):.4f}{std} |")
        labels = summary.get(f"hc18-{arch}-labels")
        if labels is not None and kd["dice_std"] is not None and labels["dice_std"] is not None:
            keeps = kd["dice_mean"] >= 0.98 * teacher["dice_mean"]
            margin = kd["dice_mean"] - labels["dice_mean"]
            noise = max(kd["dice_std"], labels["dice_std"])
            lines += ["", f"Goal check ({len(kd['seeds'])} kd seeds): kd / teacher = "
                      f"{kd['dice_mean'] / teacher['dice_mean']:.4f} (goal >= 0.98: {'met' if keeps else 'NOT met'}); "
                      f"kd - labels only = {margin:+.4f} vs the larger seed std {noise:.4f} "
                      f"({'met' if margin > noise else 'NOT met'})."]
    return lines


def pareto(summary: dict[str, dict], latency_rows: list[dict], out_png: Path, out_json: Path) -> None:
    """Test Dice vs int8 latency at 1 thread, one point per model (seed-0 bundle latency, Dice over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = []
    for r in latency_rows:
        if r["threads"] != 1:
            continue
        row = Path(r["bundle"]).name  # bundle folders are named after the summary rows (see latency.sh)
        if row in summary:
            points.append({"row": row, "p50_ms": r["latency_ms"]["p50"], "p10_ms": r["latency_ms"].get("p10"),
                           "p90_ms": r["latency_ms"]["p90"], "dice_mean": summary[row]["dice_mean"],
                           "dice_std": summary[row]["dice_std"], "seeds": len(summary[row]["seeds"]),
                           "target": r["target"], "precision": r["precision"]})
    out_json.write_text(json.dumps({"points": points}, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for p in points:
        kind = "teacher" if "teacher" in p["row"] else ("KD" if p["row"].endswith("-kd") else "labels only")
        style = {"teacher": ("s", "#d62728"), "KD": ("o", "#2ca02c"), "labels only": ("^", "#1f77b4")}[kind]
        lo = p["p50_ms"] - (p["p10_ms"] if p["p10_ms"] is not None else p["p50_ms"])
        ax.errorbar(p["p50_ms"], p["dice_mean"], xerr=[[lo], [p["p90_ms"] - p["p50_ms"]]],
                    yerr=p["dice_std"] or 0, fmt=style[0], color=style[1], capsize=3,
                    label=kind if kind not in ax.get_legend_handles_labels()[1] else None)
        ax.annotate(p["row"].replace("hc18-", ""), (p["p50_ms"], p["dice_mean"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))  # 2, 5, 10 ms, not 2 x 10^0
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("int8 TFLite latency, 1 thread, p50 (ms; bars p10-p90, log scale)")
    ax.set_ylabel("HC18 test Dice (mean ± std over seeds)")
    ax.set_title("Accuracy vs latency: teacher and students (labels only vs pocus kd)")
    ax.legend(loc="center")  # the corners hold the points
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="?", default=str(HERE / "runs"))
    parser.add_argument("--latency", default=None)
    args = parser.parse_args()
    summary = summarise(collect(Path(args.runs)))
    (HERE / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (HERE / "results.md").write_text(markdown(summary))
    if args.latency:
        rows = json.loads(Path(args.latency).read_text())["rows"]
        pareto(summary, rows, HERE / "pareto.png", HERE / "pareto.json")
    print(markdown(summary))


if __name__ == "__main__":
    main()
