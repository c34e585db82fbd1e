"""Trainer efficiency: images/s of `pocus distill` vs a bare loop on the same batches, in one run.

The bare loop does only teacher forward + student forward/backward + AdamW step (fused, channels_last student,
as the trainer) on batches that are already in memory (no data loading, mixup, logging, progress, checkpoint
bookkeeping). Both use the same models, batch size and thread count; the first `--warmup` steps of each are not
timed.
Usage: .venv/bin/python benchmarks/distill/efficiency.py [--steps 12] > benchmarks/distill/efficiency.md
`--components REPS` times each speed cut of the trainer (fused AdamW, channels_last, frame cache) old vs new instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from pocus_edge.data.dataset import AugmentedFrames, load_frame
from pocus_edge.distill.config import DistillConfig
from pocus_edge.distill.data import FrameCache
from pocus_edge.distill.ddp import DistEnv
from pocus_edge.distill.objective import token_mse
from pocus_edge.distill.setup import build_models, build_optimizer, prepare_data
from pocus_edge.distill.trainer import run_distillation


def bare_loop(cfg: DistillConfig, steps: int, warmup: int) -> float:
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    data = prepare_data(cfg, env)
    teacher, student = build_models(cfg, env.device)
    student = student.to(memory_format=torch.channels_last)  # as the trainer's (TrainStep): same kernels both sides
    optimizer, _ = build_optimizer(cfg, student, steps)
    frames = AugmentedFrames(data.train, cfg.image_size, cfg.aug)
    batches = [torch.stack([frames[key] for key in mb]) for mb in data.plan.micro_batches_from(0, steps)]
    student.train()
    times = []
    for images in batches:
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            target = teacher(images)
        token_mse(student(images), target).backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return cfg.batch_size / (sum(times[warmup:]) / len(times[warmup:]))


def components(cfg: DistillConfig, reps: int) -> list[tuple[str, float, float]]:
    """Old vs new of each speed cut, timed alternately `reps` times: (what, median old s, median new s)."""
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    data = prepare_data(cfg, env)
    teacher, student = build_models(cfg, env.device)
    keys = next(data.plan.micro_batches_from(0, 1))
    images = torch.stack([AugmentedFrames(data.train, cfg.image_size, cfg.aug)[k] for k in keys])
    target = teacher(images)
    nhwc = copy.deepcopy(student).to(memory_format=torch.channels_last).train()
    cache = FrameCache()
    refs = [data.train[i] for i, _ in keys]
    for ref in refs:
        cache(ref)

    def fwd_bwd(model):
        model.zero_grad(set_to_none=True)
        token_mse(model(images), target).backward()

    fwd_bwd(student.train())
    grads = [p.grad.clone() for p in student.parameters()]

    def adamw_step(fused: bool):
        params = [p.detach().clone().requires_grad_() for p in student.parameters()]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused or None)
        optimizer.step()  # the first step allocates the moments
        t0 = time.perf_counter()
        optimizer.step()
        return time.perf_counter() - t0

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    pairs = {
        "AdamW step: per-parameter loop -> fused": (lambda: adamw_step(False), lambda: adamw_step(True)),
        "student fwd+bwd: contiguous -> channels_last": (lambda: timed(lambda: fwd_bwd(student)),
                                                         lambda: timed(lambda: fwd_bwd(nhwc))),
        "frames of a batch: decode -> cache": (lambda: timed(lambda: [load_frame(r) for r in refs]),
                                               lambda: timed(lambda: [cache(r) for r in refs])),
    }
    out = []
    for name, (old, new) in pairs.items():
        times = [(old(), new()) for _ in range(reps)]
        out.append((name, statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)))
    return out


def trainer_rate(cfg: DistillConfig, warmup: int) -> float:
    run_distillation(cfg)
    rows = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    seconds = [cfg.batch_size / r["images_per_s"] for r in rows[warmup:]]
    return cfg.batch_size / (sum(seconds) / len(seconds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("POCUS_SHARED_DATA", "../shared/data") + "/busi")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--components", type=int, default=0, metavar="REPS",
                        help="instead: time each speed cut old vs new, alternately, REPS times")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DistillConfig(
            data=[args.data], out=str(Path(tmp) / "run"), teacher_weights="random", image_size=128, batch_size=16,
            max_steps=args.steps, save_every=str(10 * args.steps), log_every=1, held_out_fraction=0.0,
            num_workers=1, threads=2, quiet=True,
        ).validate()
        if args.components:
            print("| speed cut (old -> new) | old s | new s | new / old |\n|---|---:|---:|---:|")
            for name, old, new in components(cfg, args.components):
                print(f"| {name} | {old:.3f} | {new:.3f} | {new / old:.2f} |")
            return
        ours = trainer_rate(cfg, args.warmup)
        bare = bare_loop(cfg, args.steps, args.warmup)
    print("# Trainer efficiency: `pocus distill` vs a bare training loop\n")
    print(f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} CPU cores, no GPU, torch threads 2")
    print(f"- Command: `.venv/bin/python benchmarks/distill/efficiency.py --steps {args.steps}`")
    print(f"- Setting: {cfg.teacher} (random) -> {cfg.student}, {cfg.image_size} px, batch {cfg.batch_size}, "
          f"data {args.data}, {args.steps} steps each, first {args.warmup} not timed, mixup on in the trainer\n")
    print("| loop | images/s |")
    print("|---|---:|")
    print(f"| bare (teacher fwd + student fwd/bwd + AdamW, batches pre-loaded) | {bare:.2f} |")
    print(f"| `pocus distill` (data loading, mixup, logging, progress, schedule) | {ours:.2f} |")
    print(f"\nOverhead of the trainer: {100 * (1 - ours / bare):.1f} % (goal ≤ 15 %).")


if __name__ == "__main__":
    main()
