"""`pocus bench ...` commands: latency, parity, suite, import, coreml-report, peak."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..cli_common import HELP_SETTINGS, console, emit_json, json_option, print_markdown, setup_logging, verbose_option
from ..errors import PocusError
from ..limits import check

_setup_logging = setup_logging


bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings=HELP_SETTINGS, help=(
    "Benchmarks of exported bundles. latency: timings on this host; parity: agreement with the fp32 checkpoint "
    "and ground-truth metrics; suite: a declared matrix (export, latency, parity, plots); import: merge phone "
    "results; coreml-report: Core ML timings on a Mac; peak: this host's GEMM throughput."))


def _int_list(text: str, flag: str) -> list[int]:
    """Thread counts '1,2,4' -> [1, 2, 4], each within limits.BOUNDS['runtime_threads']."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PocusError(f"{flag} {text!r}: expected comma-separated integers such as 1,2,4")
    if not values or min(values) < 1:
        raise PocusError(f"{flag} {text!r}: values must be >= 1")
    return [check("runtime_threads", v, flag) for v in values]


@bench_app.command("latency")
def bench_latency(
    bundles: list[Path] = typer.Argument(..., help="Bundle folders."),
    threads: str = typer.Option("1", help="Thread counts, comma-separated, e.g. 1,2,4."),
    warmup: int = typer.Option(10, help="Untimed warm-up runs per bundle."),
    runs: int = typer.Option(100, help="Timed runs per bundle (interleaved across bundles)."),
    batch: int = typer.Option(1, help="Batch size per call."),
    profile: str | None = typer.Option(None, help="Host-emulation profile: phone | tablet | jetson | cart."),
    backend: str | None = typer.Option(None, help="Override the bundle's backend (e.g. onnxruntime for a TRT kit)."),
    no_cold_start: bool = typer.Option(False, "--no-cold-start", help="Skip the fresh-process cold-start run."),
    json_path: Path | None = json_option("the result rows"),
    md_path: Path | None = typer.Option(None, "--md", metavar="FILE", help="Write a Markdown table here."),
    plot: Path | None = typer.Option(None, "--plot", metavar="FILE", help="Write a PNG of p50 latency with p10-p90 "
                                     "error bars here."),
    verbose: bool = verbose_option(),
) -> None:
    """Latency p50/p90/p99, FPS, cold start, peak RSS, size and GFLOP/s per bundle x threads.

    Bundles this host cannot run (a Core ML bundle on Linux, a TensorRT engine without a GPU) are skipped with the
    reason; the others are measured."""
    from ..io import atomic_write_text
    from .host import apply_profile
    from .latency import check_bundles, measure_latency
    from .report import latency_table
    from .rows import rows_document, write_rows

    _setup_logging(False, verbose)
    if plot is not None and plot.suffix.lower() != ".png":
        raise PocusError(f"--plot {plot}: write a .png file, e.g. --plot latency.png")
    check("warmup", warmup)
    check("runs", runs)
    check("bench_batch", batch, "--batch")
    thread_list = _int_list(threads, "--threads")
    check_bundles(bundles)
    bundles = runnable_bundles(bundles, backend)
    profile_threads = apply_profile(profile)
    if threads == "1" and profile_threads is not None:
        thread_list = profile_threads
    command = "pocus bench latency " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "latency"] else
                                                 sys.argv[1:])
    rows = measure_latency(bundles, thread_list, warmup, runs, batch, profile, command, backend, not no_cold_start)
    table = latency_table(rows)
    if md_path:
        atomic_write_text(md_path, table)
    if plot is not None:
        from .plots import plot_latency

        plot_latency(rows, plot)
    if json_path is not None and str(json_path) == "-":
        emit_json(json_path, rows_document(rows))
        return
    if json_path is not None:
        write_rows(json_path, rows)
    print_markdown(table)


def runnable_bundles(bundles: list[Path], backend: str | None) -> list[Path]:
    """The bundles whose backend runs on this host; each other one is named with the reason (BackendUnavailable:
    Core ML off macOS, an engine not installed). None runnable is an error."""
    from ..runtime import load
    from ..runtime.backends import BackendUnavailable

    runnable = []
    for bundle in bundles:
        try:
            load(bundle, threads=1, backend=backend)
        except BackendUnavailable as exc:
            console.print(f"[yellow]skipped[/yellow] {bundle}: {exc}", highlight=False)
            continue
        runnable.append(bundle)
    if not runnable:
        raise PocusError("no bundle can run on this host (see the skipped lines above); measure them where their "
                         "backend runs, e.g. pocus bench coreml-report on a Mac, then pocus bench import")
    return runnable


@bench_app.command("parity")
def bench_parity_cmd(
    bundles: list[Path] = typer.Argument(..., help="Bundle folders."),
    reference: Path = typer.Option(..., "--reference", help="The fp32 checkpoint the bundles came from."),
    data: Path = typer.Option(..., "--data", help="Labelled folder (finetune layout)."),
    split: str = typer.Option("test", help="test | val | train | all."),
    seed: int = typer.Option(0, "--split-seed", "--seed", help="Seed of the split (use the fine-tune's "
                             "--split-seed; --seed is the earlier name)."),
    json_path: Path | None = json_option("the rows"),
) -> None:
    """Exported vs PyTorch fp32 (agreement) and each vs ground truth (Dice/IoU/HD95 or accuracy/F1)."""
    from .parity import bench_parity

    if split not in ("test", "val", "train", "all"):
        raise PocusError(f"--split {split!r}: choose test, val, train or all")
    rows = bench_parity(bundles, reference, data, split, seed)
    if emit_json(json_path, {"rows": [r.to_json() for r in rows]}):
        return
    for r in rows:
        key, change = ("dice_change", r.dice_change) if "dice" in r.ground_truth else ("accuracy_change",
                                                                                      r.accuracy_change)
        agreement = ", ".join(f"{k}={'undefined' if v is None else f'{v:.4f}'}" for k, v in r.agreement.items())
        console.print(f"{r.bundle}: {r.target} {r.precision}: agreement {agreement}; {key} "
                      f"{'undefined' if change is None else f'{change:+.4f}'}", highlight=False)


@bench_app.command("suite", short_help="Run a declared matrix: export or reuse bundles, latency, parity, reports.")
def bench_suite(
    suite_file: Path = typer.Argument(..., help="Suite YAML (see benchmarks/suite.yaml)."),
    only: str | None = typer.Option(None, "--only", help="latency | parity: run one stage, keep the other's results."),
    verbose: bool = verbose_option(),
) -> None:
    """Run a declared matrix: export or reuse bundles, latency + baselines + parity, JSON, Markdown, PNG plots."""
    from .suite import run_suite

    _setup_logging(False, verbose)
    result = run_suite(suite_file, only)
    console.print(f"suite done: {result['rows']} latency rows, {result['parity_rows']} parity rows in "
                  f"{result['out']}", highlight=False)


@bench_app.command("import")
def bench_import(
    files: list[Path] = typer.Argument(..., help="android_demo JSON, a Core ML report (bench coreml-report) or "
                                                 "TFLite benchmark_model text."),
    into: Path = typer.Option(..., "--into", "--out", "-o", help="JSON rows file to merge into (created if absent; "
                              "--out/-o as in the other commands)."),
    device: str | None = typer.Option(None, help="Device label for text outputs, e.g. 'Pixel 8 (Tensor G3)'."),
    model: str | None = typer.Option(None, help="Model name for text outputs."),
) -> None:
    """Merge results measured elsewhere (phones, tablets) into the same JSON rows as host runs."""
    from .importers import import_file
    from .rows import read_rows, write_rows

    existing = read_rows(into) if into.is_file() else []
    new = [row for f in files for row in import_file(f, device, model)]
    write_rows(into, existing + new)
    console.print(f"merged {len(new)} row(s) into {into} ({len(existing) + len(new)} in all)", highlight=False)


@bench_app.command("coreml-report")
def bench_coreml_report(
    bundle: Path = typer.Argument(..., help="A coreml bundle folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Report JSON to write (then `pocus bench import` it anywhere)."),
    compute_units: str = typer.Option("ALL", help="ALL | CPU_ONLY | CPU_AND_GPU | CPU_AND_NE."),
    warmup: int = typer.Option(10, help="Untimed predictions after the first."),
    runs: int = typer.Option(100, help="Timed predictions."),
) -> None:
    """On a Mac: load, prediction times and compute-unit placement of a Core ML bundle, as a report JSON."""
    from ..io import atomic_write_json, nan_to_null
    from .coreml_report import measure_coreml_report, report_to_row

    check("warmup", warmup)
    check("runs", runs)
    report = measure_coreml_report(bundle, compute_units, warmup, runs)
    atomic_write_json(out, nan_to_null(report))
    row = report_to_row(report, out.name)
    console.print(f"{row.device['label']} {row.backend}: p50 {row.latency_ms.p50:.2f} ms, cold start "
                  f"{row.cold_start_ms:.0f} ms -> {out}", highlight=False)


@bench_app.command("peak")
def bench_peak(
    threads: str = typer.Option("1,2", help="Thread counts."),
    json_path: Path | None = json_option("the measurements"),
) -> None:
    """This host's peak fp32 (numpy BLAS) and int8 (ONNX Runtime MatMulInteger) GEMM throughput."""
    from .host import host_device
    from .peak import measure_peak

    rows = measure_peak(_int_list(threads, "--threads"))
    if emit_json(json_path, {"device": host_device(), "rows": rows}):
        return
    for r in rows:
        console.print(f"{r['threads']} thread(s): fp32 GEMM {r['fp32_gemm_gflops']:.1f} GFLOP/s, int8 GEMM "
                      f"{r['int8_gemm_gops']:.1f} GOP/s", highlight=False)
