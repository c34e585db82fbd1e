"""Shared pieces of the command line: the console, logging set-up and the summary table."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "absl", "coremltools", "litert_torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_summary(title: str, summary: dict, out) -> None:
    from rich.table import Table

    table = Table(title=f"{title}: {out}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
