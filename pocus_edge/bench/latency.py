"""`pocus bench latency`: per bundle x threads latency, cold start, peak RSS, size and GFLOP/s.

Timed calls go through the runtime's backend on an already pre-processed input (the model's own cost);
runs of different bundles are interleaved round-robin, so drift in machine speed hits all alike.
Cold start (load + first inference) and peak RSS are measured in a fresh subprocess per bundle. Peak RSS is
the child's VmHWM: getrusage's ru_maxrss carries the parent's high-water mark across fork+exec on Linux.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import load
from ..runtime.manifest import verify_bundle
from .host import host_device
from .rows import LatencyMs, LatencyRow, finite_or_none
from .stats import NOISY_CV, coefficient_of_variation, fps, latency_stats

log = logging.getLogger(__name__)

_COLD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from pocus_edge.runtime import load
p = load(sys.argv[1], threads=int(sys.argv[2]))
x, _ = p.preprocess([np.zeros((256, 256), np.uint8)])
p.run_model(x)
cold = (time.perf_counter() - t0) * 1000
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"cold_start_ms": cold, "peak_rss_mb": hwm}))
"""


def bundle_size_mb(bundle: Path, manifest: dict[str, Any]) -> float:
    path = bundle / manifest["model_file"]
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def cold_start(bundle: Path, threads: int) -> dict[str, float | None]:
    """Load + first inference and peak RSS in a fresh interpreter (what an app start costs); None where it failed."""
    proc = subprocess.run([sys.executable, "-c", _COLD, str(bundle), str(threads)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        log.warning("cold-start run failed for %s: %s", bundle, proc.stderr.strip().splitlines()[-1:])
        return {"cold_start_ms": None, "peak_rss_mb": None}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_latency(bundles: list[Path], threads: list[int], warmup: int = 10, runs: int = 100, batch: int = 1,
                    profile: str | None = None, command: str = "", backend: str | None = None,
                    with_cold_start: bool = True) -> list[LatencyRow]:
    """One result row per bundle x thread count."""
    rows = []
    device = host_device(profile)
    for n_threads in threads:
        predictors = {}
        for b in bundles:
            predictors[b] = load(b, threads=n_threads, backend=backend)
        inputs = {}
        for b, p in predictors.items():
            x, _ = p.preprocess([np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)] * batch)
            inputs[b] = x
            for _ in range(warmup):
                p.run_model(x)
        samples: dict[Path, list[float]] = {b: [] for b in bundles}
        for _ in range(runs):
            for b, p in predictors.items():  # round-robin: interleaved, not back to back
                start = time.perf_counter()
                p.run_model(inputs[b])
                samples[b].append((time.perf_counter() - start) * 1000)
        for b, p in predictors.items():
            rows.append(_row(b, p, n_threads, batch, samples[b], warmup, runs, device, command, with_cold_start))
    return rows


def _row(bundle: Path, predictor, threads: int, batch: int, samples: list[float], warmup: int, runs: int,
         device: dict, command: str, with_cold_start: bool) -> LatencyRow:
    manifest = predictor.manifest
    stats = latency_stats(samples)
    cv = coefficient_of_variation(samples)
    if cv > NOISY_CV:
        log.warning("%s at %d thread(s): timings vary a lot (CV %.0f%%); the machine is noisy, numbers are "
                    "less reliable", bundle, threads, cv * 100)
    flops = manifest.get("flops")
    cold = cold_start(bundle, threads) if with_cold_start else {}
    return LatencyRow(
        bundle=str(bundle), model=manifest["name"], task=manifest["task"], target=manifest["target"],
        precision=manifest["precision"], backend=predictor.backend.name, threads=threads, batch=batch, device=device,
        profile=device.get("profile"), warmup=warmup, runs=runs, latency_ms=LatencyMs(**stats),
        cv=finite_or_none(cv), fps=finite_or_none(fps(stats["p50"], batch)),
        file_size_mb=bundle_size_mb(bundle, manifest), flops=flops,
        gflops_per_s=(flops * batch / (stats["p50"] / 1000) / 1e9) if flops else None,
        model_sha256=manifest["files"][manifest["model_file"]][:16],  # verified by load(): not hashed again
        source="measured", date=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), command=command,
        cold_start_ms=finite_or_none(cold.get("cold_start_ms")), peak_rss_mb=finite_or_none(cold.get("peak_rss_mb")))


def check_bundles(bundles: list[Path]) -> None:
    for b in bundles:
        verify_bundle(b)
