"""Runtime proof for benchmarks/runtime/README.md: pre/post-processing overhead and a 10,000-frame soak.

    .venv/bin/python benchmarks/runtime/overhead_and_soak.py overhead BUNDLE IMAGE_DIR [--runs 50]
    .venv/bin/python benchmarks/runtime/overhead_and_soak.py soak BUNDLE IMAGE_DIR [--frames 10000]

overhead: in one process, 1 thread, interleaved: (a) the bare backend call on an already pre-processed
tensor, (b) predictor(path) end to end (read + pre + model + post, mask at original size).
soak: `stream` over real frames cycled to N frames, RSS sampled every 100 frames; growth after warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from pocus_edge.runtime import load, stream
from pocus_edge.runtime.images import load_gray


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def overhead(bundle: Path, images: list[Path], runs: int) -> dict:
    predictor = load(bundle, threads=1)
    x, _ = predictor.preprocess([load_gray(images[0])])
    for _ in range(5):
        predictor.run_model(x)
        predictor(images[0])
    bare, full = [], []
    for i in range(runs):
        path = images[i % len(images)]
        t = time.perf_counter()
        predictor.run_model(x)
        bare.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        predictor(path)
        full.append((time.perf_counter() - t) * 1000)
    b, f = float(np.median(bare)), float(np.median(full))
    return {"bundle": str(bundle), "model": predictor.manifest["name"], "precision": predictor.manifest["precision"],
            "target": predictor.manifest["target"], "runs": runs, "threads": 1, "bare_model_p50_ms": b,
            "end_to_end_p50_ms": f, "pre_post_ms": f - b, "overhead_fraction": (f - b) / b}


def soak(bundle: Path, images: list[Path], frames: int) -> dict:
    predictor = load(bundle, threads=1)
    grays = [load_gray(p) for p in images]
    source = (grays[i % len(grays)] for i in itertools.count())
    samples = []
    start = time.perf_counter()
    for i, _ in enumerate(stream(predictor, itertools.islice(source, frames), smoothing=0.3)):
        if i % 100 == 0:
            samples.append((i, rss_mb()))
    warm = next(r for i, r in samples if i >= 500)
    final = samples[-1][1]
    return {"bundle": str(bundle), "frames": frames, "seconds": time.perf_counter() - start,
            "rss_after_warmup_mb": warm, "rss_final_mb": final, "growth_fraction": (final - warm) / warm,
            "rss_samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["overhead", "soak"])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--frames", type=int, default=10000)
    args = parser.parse_args()
    images = sorted(args.images.glob("*.png"))[:50]
    result = overhead(args.bundle, images, args.runs) if args.mode == "overhead" else soak(args.bundle, images,
                                                                                          args.frames)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
