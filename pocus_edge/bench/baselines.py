"""Latency baselines that are not bundles: PyTorch eager fp32, and a plain `torch.onnx.export` run with
ONNX Runtime's default session options (what a user would do without pocus-edge). Same input, same
timing loop and the same row schema as bundle rows, so tables compare like with like."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np

from .host import host_device
from .rows import LatencyMs, LatencyRow, finite_or_none
from .stats import coefficient_of_variation, fps, latency_stats


def _time(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _row(name: str, task: str, backend: str, threads: int, samples: list[float], runs: int, warmup: int,
         flops: int | None, size_mb: float | None) -> LatencyRow:
    stats = latency_stats(samples)
    return LatencyRow(
        bundle=None, model=name, task=task, target="baseline", precision="fp32", backend=backend, threads=threads,
        batch=1, device=host_device(), profile=None, warmup=warmup, runs=runs, latency_ms=LatencyMs(**stats),
        cv=finite_or_none(coefficient_of_variation(samples)), fps=finite_or_none(fps(stats["p50"])),
        file_size_mb=size_mb, flops=flops, gflops_per_s=flops / (stats["p50"] / 1000) / 1e9 if flops else None,
        source="measured", date=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        command="pocus bench suite (baseline)")


def measure_baselines(model_arg: str, image_size: int | None, threads: list[int], warmup: int,
                      runs: int) -> list[LatencyRow]:
    """Rows for PyTorch eager fp32 and plain-export ONNX Runtime at each thread count."""
    import onnxruntime as ort
    import torch

    from ..export.api import count_flops
    from ..export.source import resolve_model

    net, spec = resolve_model(model_arg, image_size)
    flops = count_flops(net, spec.image_size)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, spec.image_size, spec.image_size),
                                                                  dtype=np.float32))
    rows: list[LatencyRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plain.onnx"
        torch.onnx.export(net, (x,), str(path))  # the defaults a user would take
        size_mb = path.stat().st_size / 1e6 + sum(p.stat().st_size for p in Path(tmp).glob("*.data")) / 1e6
        for t in threads:
            torch.set_num_threads(t)
            with torch.no_grad():
                samples = _time(lambda: net(x), warmup, runs)
            rows.append(_row(spec.name, spec.task, "pytorch eager", t, samples, runs, warmup, flops, None))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = t
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}
            samples = _time(lambda s=session, f=feed: s.run(None, f), warmup, runs)
            rows.append(_row(spec.name, spec.task, "onnxruntime (plain torch.onnx.export, defaults)", t, samples,
                             runs, warmup, flops, size_mb))
    return rows
