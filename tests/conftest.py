"""Shared fixtures: synthetic phantom folders, a tiny distillation config, and the real-data location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pocus_edge.data.phantoms import write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
def _find_shared_data() -> Path:
    """POCUS_SHARED_DATA if set, else ../shared/data beside the checkout, else the workplace's /work/shared/data."""
    if os.environ.get("POCUS_SHARED_DATA"):
        return Path(os.environ["POCUS_SHARED_DATA"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find_shared_data()

# A teacher small enough for CPU tests: the DINOv3 ViT-S/16 architecture at depth 3, width 48.
TINY_TEACHER = {"depth": 3, "embed_dim": 48, "num_heads": 2}


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 40, size=(96, 96), seed=1)


def tiny_config_yaml(path: Path, data: Path | list, **overrides) -> Path:
    """Write a YAML config for a seconds-long CPU distillation and return its path."""
    import yaml

    cfg = {
        "data": [str(d) for d in data] if isinstance(data, list) else [str(data)],
        "teacher": "vit_small_patch16_dinov3",
        "teacher_weights": "random",
        "teacher_kwargs": TINY_TEACHER,
        "student": "resnet18",
        "head_hidden": 64,
        "image_size": 64,
        "batch_size": 8,
        "max_steps": 6,
        "save_every": "2",
        "log_every": 1,
        "held_out_fraction": 0.1,
        "num_workers": 0,
        "threads": 1,
        "quiet": True,
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m pocus_edge.cli ARGS` and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pocus_edge.cli", *args], capture_output=True, text=True, env=full_env,
        timeout=timeout, cwd=REPO,
    )


def require_shared_data() -> Path:
    if not (SHARED_DATA / "busi").is_dir():
        pytest.skip(f"real ultrasound data not found at {SHARED_DATA} (set POCUS_SHARED_DATA to its folder)")
    return SHARED_DATA


TEST_IMAGE_SIZE = 64  # export tests: the real ResNet-50 graphs at a size that converts in seconds


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory, phantom_dir):
    """get(target, precision, model=..., **options) -> bundle folder, exported once per session and cached."""
    from pocus_edge.export import export

    root = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple, Path] = {}

    def get(target: str, precision: str = "fp32", model: str = "unet-resnet50", **options) -> Path:
        key = (target, precision, model, repr(sorted(options.items())))
        if key not in cache:
            out = root / f"{model}-{target}-{precision}-{len(cache)}"
            from pocus_edge.export.targets import TARGETS, canonical_target

            calibrates = TARGETS[canonical_target(target)].calibrates(precision)  # not Core ML int8 (weights only)
            calib = phantom_dir if calibrates or options.get("calib_data") == "phantoms" else None
            options = {k: v for k, v in options.items() if k != "calib_data"}
            if precision == "int8" and model == "unet-resnet50":
                # A random-weight U-Net is far more sensitive to rounding than a trained one; the int8 goals
                # (Dice >= 0.98) are measured on trained models in benchmarks/export. Here: well above chance.
                options.setdefault("parity_thresholds", {"dice_mean": 0.8, "dice_min": 0.6,
                                                         "prob_abs_diff_mean": 0.12})
            export(model, target, precision, out, image_size=TEST_IMAGE_SIZE, calib_data=calib, **options)
            cache[key] = out
        return cache[key]

    return get


SMOKE_MODELS = {"segmentation": "unet-resnet50", "classification": "classifier-resnet50",
                "embedding": "encoder-resnet50"}  # the built-in smoke model of each task (random weights, seed 0)


@pytest.fixture(scope="session")
def task_model():
    """get(task) -> (net, spec): the deterministic smoke model of that task at TEST_IMAGE_SIZE, built once per
    session; the same model bundle_factory(target, precision, model=SMOKE_MODELS[task]) exports."""
    from pocus_edge.export.source import resolve_model

    cache: dict[str, tuple] = {}

    def get(task: str) -> tuple:
        if task not in cache:
            cache[task] = resolve_model(SMOKE_MODELS[task], TEST_IMAGE_SIZE)
        return cache[task]

    return get
