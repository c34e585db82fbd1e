"""FLOPs, parameters and (with --latency) PyTorch fp32 1-thread latency of every registry U-Net and classifier,
with the slim decoder default and with smp's default decoder, at 256 px.

Usage: .venv/bin/python benchmarks/kd/architectures.py [--latency] > benchmarks/kd/architectures.md
FLOPs are exact counts of the PyTorch graph (2 x multiply-adds, torch.utils.flop_counter), independent of the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pocus_edge.export.api import count_flops
from pocus_edge.models.registry import ARCHITECTURES, SMP_DEFAULT_DECODER, create_model


def _latency_ms(model: torch.nn.Module, size: int, runs: int = 20) -> float:
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    head = "| architecture | task | decoder | GFLOP | params (M) |"
    head += " fp32 eager 1 thread (ms) |" if args.latency else ""
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for arch, spec in ARCHITECTURES.items():
        variants = [("segmentation", spec.decoder_channels)]
        if spec.decoder_channels != SMP_DEFAULT_DECODER:
            variants.append(("segmentation", SMP_DEFAULT_DECODER))
        variants.append(("classification", None))
        for task, decoder in variants:
            model = create_model(task, arch, 1 if task == "segmentation" else 3, decoder).eval()
            flops = count_flops(model, args.size) / 1e9
            params = sum(p.numel() for p in model.parameters()) / 1e6
            label = ",".join(map(str, decoder)) + (" (default)" if decoder == spec.decoder_channels else "") \
                if decoder else "-"
            row = f"| {arch} | {task} | {label} | {flops:.2f} | {params:.2f} |"
            if args.latency:
                row += f" {_latency_ms(model, args.size):.1f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
