"""`pocus sweep`: label fractions x encoder initialisations -> one table in the layout of the paper's Table 3.

Each cell is a full `pocus finetune` run (its folder kept under OUT/runs/) and reports the test metric
(Dice for segmentation, accuracy and macro-F1 for classification).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .train import FinetuneConfig, run_finetune


def parse_encoders(items: list[str]) -> dict[str, str]:
    """'NAME=PATH' or 'random' -> {name: encoder argument}."""
    encoders = {}
    for item in items:
        name, sep, path = item.partition("=")
        encoders[name if sep else ("R50-Rand" if item == "random" else Path(item).parent.name or item)] = \
            path if sep else item
    return encoders


def run_sweep(task: str, data: str, encoders: dict[str, str], fractions: list[float], out: Path,
              **train_kwargs: Any) -> dict[str, Any]:
    """Run every cell, then write OUT/sweep.json and OUT/sweep.md."""
    key = "dice" if task == "segmentation" else "accuracy"
    cells: dict[str, dict[str, Any]] = {}
    for name, encoder in encoders.items():
        for fraction in fractions:
            run_dir = out / "runs" / f"{name}-{int(round(fraction * 100))}pct"
            summary = run_finetune(FinetuneConfig(task=task, data=data, out=str(run_dir), encoder=encoder,
                                                  label_fraction=fraction, **train_kwargs))
            cells.setdefault(name, {})[f"{fraction:g}"] = {"test": summary["test"], "train_images":
                                                            summary["train_images"], "run": str(run_dir)}
    result = {"task": task, "data": data, "metric": key, "fractions": fractions, "encoders": encoders,
              "settings": train_kwargs, "cells": cells}
    atomic_write_json(out / "sweep.json", result)
    atomic_write_text(out / "sweep.md", sweep_table(result))
    return result


def sweep_table(result: dict[str, Any]) -> str:
    """Markdown: rows = initialisation, columns = label fraction, cells = test metric (macro-F1 beside accuracy)."""
    fractions = result["fractions"]
    header = "| initialisation | " + " | ".join(f"{f * 100:g} %" for f in fractions) + " |"
    lines = [header, "|" + "---|" * (len(fractions) + 1)]
    for name, row in result["cells"].items():
        values = []
        for f in fractions:
            test = row[f"{f:g}"]["test"]
            if result["metric"] == "dice":
                values.append(f"{test['dice']:.4f}")
            else:
                values.append(f"{test['accuracy']:.4f} (F1 {test['macro_f1']:.4f})")
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
