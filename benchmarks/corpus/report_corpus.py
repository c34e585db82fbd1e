"""Tables (Markdown + JSON) of benchmarks/corpus from the runs of run_corpus_bench.sh.

Usage: .venv/bin/python benchmarks/corpus/report_corpus.py [--work W] [--runs W/runs/distill] [--out benchmarks/corpus]

(a) held-out token R² of `pocus distill` (RUN.summary.json, `held_out_r2_end`) and (b) HC18 test Dice of
`pocus kd` (RUN/metrics.json, `test.dice`), each per method as mean ± sample std over seeds, and the paired per-seed
difference of every method against `random` (mean, std, 95 % t-interval, seeds). A difference whose interval holds 0
is reported as "no difference shown" (a null result is a result). Runs judged on different held-out frames (another
`held_out_data_sha256`) or trained for a different number of steps are refused: they are not comparable.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

# two-sided 95 % Student t quantiles by degrees of freedom (n seeds - 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
NAME = re.compile(r"^(?P<row>.+)-s(?P<seed>\d+)$")
BASELINE = "random"
MASKED = "random-masked"  # masked-consistency on the random lists: compared with random (token MSE)


def stats(values: list[float]) -> dict:
    """mean, sample std and a 95 % t-interval of the mean (None where n is too small)."""
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else None
    half = T95.get(n - 1, 1.96) * std / n ** 0.5 if std is not None else None
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half] if half is not None else None}


def collect_distill(runs: Path) -> dict[str, dict[int, dict]]:
    """{row: {seed: summary}} of the finished distill runs (RUN.summary.json)."""
    rows: dict[str, dict[int, dict]] = {}
    for path in sorted(runs.glob("*.summary.json")):
        match = NAME.match(path.name.removesuffix(".summary.json"))
        if match:
            rows.setdefault(match["row"], {})[int(match["seed"])] = json.loads(path.read_text())
    return rows


def collect_kd(runs: Path) -> dict[str, dict[int, float]]:
    """{row: {seed: test Dice}} of the finished kd runs (RUN/metrics.json)."""
    rows: dict[str, dict[int, float]] = {}
    for path in sorted(runs.glob("*/metrics.json")):
        match = NAME.match(path.parent.name)
        if match:
            rows.setdefault(match["row"], {})[int(match["seed"])] = json.loads(path.read_text())["test"]["dice"]
    return rows


def check_comparable(distill: dict[str, dict[int, dict]]) -> None:
    """Every distill run must be judged on the same held-out frames after the same number of steps."""
    seen = {(s.get("held_out_data_sha256"), s.get("steps")) for seeds in distill.values() for s in seeds.values()}
    if len(seen) > 1:
        raise SystemExit(f"runs differ in (held_out_data_sha256, steps): {sorted(seen, key=str)}; they are not "
                         "comparable. Rerun them with one held-out set and one --max-steps")
    if any(digest is None for digest, _ in seen):
        raise SystemExit("a run has no held_out_data_sha256: it was not judged on --held-out-data; rerun it")


def paired(values: dict[str, dict[int, float]], row: str, base: str) -> dict | None:
    """Per-seed differences row - base on the seeds both have."""
    seeds = sorted(set(values.get(row, {})) & set(values.get(base, {})))
    if not seeds:
        return None
    diffs = [values[row][s] - values[base][s] for s in seeds]
    result = {"seeds": seeds, "diffs": diffs, **stats(diffs)}
    ci = result["ci95"]
    result["verdict"] = ("too few seeds" if ci is None else "no difference shown" if ci[0] <= 0 <= ci[1] else
                         "better" if ci[0] > 0 else "worse")
    return result


def table(metric: str, values: dict[str, dict[int, float]], rows: list[str], base: str) -> tuple[list[str], dict]:
    """Markdown lines and JSON of one metric: per row mean ± std, and the paired difference against `base`."""
    lines = [f"| row | {metric} mean ± std | seeds | per seed | Δ vs {base} (paired) | 95 % CI of Δ | verdict |",
             "|---|---|---|---|---|---|---|"]
    record = {}
    for row in rows:
        if not values.get(row):  # no finished run of this row yet
            continue
        seeds = sorted(values[row])
        summary = stats([values[row][s] for s in seeds])
        diff = paired(values, row, base) if row != base else None
        record[row] = {"seeds": seeds, "values": [values[row][s] for s in seeds], **summary, "vs_" + base: diff}
        std = f" ± {summary['std']:.4f}" if summary["std"] is not None else ""
        per_seed = ", ".join(f"s{s}: {values[row][s]:.4f}" for s in seeds)
        delta = ci = verdict = "–"
        if diff is not None:
            delta = f"{diff['mean']:+.4f}" + (f" ± {diff['std']:.4f}" if diff["std"] is not None else "")
            ci = f"[{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}]" if diff["ci95"] else "–"
            verdict = f"{diff['verdict']} (n={diff['n']})"
        lines.append(f"| {row} | {summary['mean']:.4f}{std} | {len(seeds)} | {per_seed} | {delta} | {ci} | {verdict} |")
    return lines, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/corpus/work"))
    parser.add_argument("--runs", type=Path, help="folder of the distill runs [WORK/runs/distill]")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/corpus"))
    args = parser.parse_args(argv)
    distill = collect_distill(args.runs or args.work / "runs" / "distill")
    check_comparable(distill)
    r2 = {row: {s: summary["held_out_r2_end"] for s, summary in seeds.items()} for row, seeds in distill.items()}
    selections = [row for row in r2 if row != MASKED]
    order = [BASELINE] + sorted(r for r in selections if r != BASELINE)
    lines_a, rec_a = table("held-out token R²", r2, order, BASELINE)
    objective = {"token-mse": r2.get(BASELINE, {}), "masked-consistency": r2.get(MASKED, {})}
    lines_o, rec_o = table("held-out token R²", objective, ["token-mse", "masked-consistency"], "token-mse")
    kd = collect_kd(args.work / "runs" / "kd")
    lines_b, rec_b = table("HC18 test Dice", kd, [BASELINE] + sorted(r for r in kd if r != BASELINE), BASELINE)
    any_run = next((s for seeds in distill.values() for s in seeds.values()), {})
    record = {"held_out_data_sha256": any_run.get("held_out_data_sha256"), "steps": any_run.get("steps"),
              "held_out_images": any_run.get("held_out_images"), "a_distill_r2": rec_a,
              "objective_r2_on_random_lists": rec_o, "b_kd_test_dice": rec_b}
    md = ["# Corpus selection: results (generated by report_corpus.py; protocol in README.md)", "",
          f"Held-out set: {record['held_out_images']} frames, sha256 of pixel digests "
          f"`{str(record['held_out_data_sha256'])[:16]}…`; {record['steps']} optimizer steps per run.", "",
          "## (a) held-out token R² of `pocus distill` by selection method", "", *lines_a, "",
          "## masked-consistency vs token MSE (same random lists)", "", *lines_o, "",
          "## (b) HC18 test Dice of `pocus kd` by transfer-set selection", "",
          *(lines_b if rec_b else ["not run yet (`run_corpus_bench.sh kd`)."]), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(md))
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
