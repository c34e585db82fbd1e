"""Core ML performance report: timings and compute-unit placement of a coreml bundle, measured on a Mac.

Core ML predicts only on Apple hardware, so this runs there (`pocus bench coreml-report BUNDLE --out FILE`)
and the JSON it writes is merged on any machine with `pocus bench import FILE`. It records what Xcode's
performance report shows (load time, prediction times, which compute unit runs each operation and its share of
the estimated cost), through the same Core ML APIs (MLModel, MLComputePlan via coremltools), in a documented
format: Xcode's own report has no published export schema, so it is not parsed.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PocusError

if TYPE_CHECKING:
    from .rows import LatencyRow

REPORT_FORMAT = "pocus-coreml-report/1"
DEVICE_KINDS = {"MLCPUComputeDevice": "cpu", "MLGPUComputeDevice": "gpu",
                "MLNeuralEngineComputeDevice": "neural_engine"}


def summarize_placement(ops: Iterable[tuple[str, str | None, float | None]]) -> dict[str, Any]:
    """(operator, preferred device kind or None, estimated cost weight or None) per op -> counts and cost shares.

    Ops Core ML gives no device for (constants) are counted as unplaced and carry no cost.
    """
    per_device: dict[str, dict[str, Any]] = {}
    unplaced = 0
    for _operator, device, cost in ops:
        if device is None:
            unplaced += 1
            continue
        entry = per_device.setdefault(device, {"ops": 0, "cost": 0.0})
        entry["ops"] += 1
        entry["cost"] += float(cost or 0.0)
    total_cost = sum(e["cost"] for e in per_device.values())
    for entry in per_device.values():
        entry["cost_share"] = entry["cost"] / total_cost if total_cost > 0 else None
    return {"devices": per_device, "unplaced_ops": unplaced}


def build_report(manifest: dict[str, Any], bundle: str, compute_units: str, device: dict[str, str],
                 load_ms: float, reload_ms: float | None, first_prediction_ms: float, prediction_ms: list[float],
                 warmup: int, placement: dict[str, Any] | None, coremltools_version: str) -> dict[str, Any]:
    """The report document; every timing in milliseconds, every prediction sample kept."""
    if not prediction_ms:
        raise PocusError("a Core ML report needs at least one timed prediction")
    return {"format": REPORT_FORMAT, "bundle": bundle, "model": manifest["name"], "task": manifest["task"],
            "precision": manifest["precision"], "flops": manifest.get("flops"), "compute_units": compute_units,
            "device": device, "load_ms": load_ms, "reload_ms": reload_ms, "first_prediction_ms": first_prediction_ms,
            "warmup": warmup, "prediction_ms": [float(x) for x in prediction_ms], "placement": placement,
            "coremltools": coremltools_version, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _mac_device() -> dict[str, str]:
    import subprocess

    def sysctl(key: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
        except OSError:
            return ""

    chip, model = sysctl("machdep.cpu.brand_string"), sysctl("hw.model")
    return {"name": f"{model} ({chip})" if model and chip else model or chip or platform.node(),
            "os": f"macOS {platform.mac_ver()[0]}", "machine": platform.machine()}


def _placement(model, compute_units: str) -> dict[str, Any] | None:
    """Per-op compute device and cost from MLComputePlan (macOS 14.4+); None where the OS lacks it."""
    import coremltools as ct

    try:
        from coremltools.models.compute_plan import MLComputePlan

        plan = MLComputePlan.load_from_path(model.get_compiled_model_path(),
                                            compute_units=getattr(ct.ComputeUnit, compute_units))
        program = plan.model_structure.program
        operations = program.functions["main"].block.operations
    except Exception:  # older macOS or coremltools: timings are still valid without placement
        return None

    def rows():
        for op in operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            cost = plan.get_estimated_cost_for_mlprogram_operation(op)
            kind = None if usage is None else DEVICE_KINDS.get(type(usage.preferred_compute_device).__name__, "other")
            yield op.operator_name, kind, None if cost is None else cost.weight

    return summarize_placement(rows())


def measure_coreml_report(bundle: Path, compute_units: str = "ALL", warmup: int = 10,
                          runs: int = 100) -> dict[str, Any]:
    """Load and time a coreml bundle on this Mac; raises PocusError elsewhere or for a non-coreml bundle."""
    from ..runtime.backends.coreml_backend import COMPUTE_UNITS
    from ..runtime.manifest import verify_bundle

    manifest = verify_bundle(bundle)
    if manifest["target"] != "coreml":
        raise PocusError(f"{bundle}: a {manifest['target']} bundle; coreml-report times coreml bundles")
    if platform.system() != "Darwin":
        raise PocusError("Core ML predicts only on macOS: run `pocus bench coreml-report` on a Mac, then "
                         "`pocus bench import REPORT.json --into ROWS.json` here")
    if compute_units not in COMPUTE_UNITS:
        raise PocusError(f"--compute-units {compute_units!r}: choose one of {', '.join(COMPUTE_UNITS)}")
    if runs < 1 or warmup < 0:
        raise PocusError("--runs must be >= 1 and --warmup >= 0")
    import coremltools as ct
    from PIL import Image

    path = str(Path(bundle) / manifest["model_file"])
    size = manifest["preprocessing"]["image_size"]
    feed = {manifest["inputs"][0]["name"]: Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (size[0], size[1]), dtype=np.uint8), mode="L")}
    units = getattr(ct.ComputeUnit, compute_units)
    start = time.perf_counter()
    model = ct.models.MLModel(path, compute_units=units)  # first load: compile + device specialisation
    load_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    model.predict(feed)
    first_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    ct.models.MLModel(path, compute_units=units)
    reload_ms = (time.perf_counter() - start) * 1000
    for _ in range(warmup):
        model.predict(feed)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict(feed)
        samples.append((time.perf_counter() - start) * 1000)
    return build_report(manifest, str(bundle), compute_units, _mac_device(), load_ms, reload_ms, first_ms, samples,
                        warmup, _placement(model, compute_units), ct.__version__)


def report_to_row(report: dict[str, Any], source_name: str) -> LatencyRow:
    """One result row (pocus-bench-row/1) from a report, labelled with the Mac it was measured on."""
    from .rows import LatencyMs, LatencyRow, finite_or_none
    from .stats import coefficient_of_variation, fps, latency_stats

    if report.get("format") != REPORT_FORMAT:
        raise PocusError(f"{source_name}: not a {REPORT_FORMAT} document")
    try:
        stats = latency_stats(report["prediction_ms"])
        device = report["device"]
        flops = report.get("flops")
        return LatencyRow(
            bundle=report["bundle"], model=report["model"], task=report["task"], target="coreml",
            precision=report["precision"], backend=f"coreml ({report['compute_units']})", threads=None, batch=1,
            device={"kind": "device", "label": device["name"], "name": device["name"], "os": device.get("os")},
            profile=None, warmup=report.get("warmup"), runs=len(report["prediction_ms"]), latency_ms=LatencyMs(**stats),
            cv=finite_or_none(coefficient_of_variation(report["prediction_ms"])), fps=finite_or_none(fps(stats["p50"])),
            cold_start_ms=report["load_ms"] + report["first_prediction_ms"], peak_rss_mb=None, file_size_mb=None,
            flops=flops, gflops_per_s=flops / (stats["p50"] / 1000) / 1e9 if flops else None,
            compute_placement=report.get("placement"), source=f"imported: Core ML report {source_name}",
            date=str(report["date"])[:10], command="pocus bench coreml-report (on the Mac named)")
    except (KeyError, TypeError, ValueError) as exc:  # BenchRowError too: a field of the wrong type
        raise PocusError(f"{source_name}: malformed Core ML report ({type(exc).__name__}: {exc})")
