"""`pocus distill --held-out-data DIR`: token R² on exactly those frames, never trained on (issue 18 section 3).

The corpus-selection benchmark (benchmarks/corpus/) compares students trained on different selected lists; their
R² must be measured on one fixed set of frames, not on a split of each list.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config_yaml
from PIL import Image

from pocus_edge.data.corpus import pixel_digest
from pocus_edge.data.readers import read_frame
from pocus_edge.distill.config import load_config
from pocus_edge.distill.ddp import init_distributed
from pocus_edge.distill.setup import prepare_data
from pocus_edge.distill.trainer import run_distillation
from pocus_edge.errors import ConfigError

TRAIN, HELD = 12, 4


def write_frames(folder: Path, seeds: range, prefix: str) -> list[Path]:
    """Distinct smooth random 64 x 64 frames, one PNG per seed."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        grid = np.random.default_rng(seed).integers(0, 256, (8, 8)).astype(np.uint8)
        path = folder / f"{prefix}{seed:03d}.png"
        Image.fromarray(grid).resize((64, 64), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("held_out_data")
    write_frames(root / "train", range(TRAIN), "t")
    write_frames(root / "held", range(100, 100 + HELD), "h")
    return root / "train", root / "held"


def _config(tmp_path: Path, train: Path, held: list[Path], **overrides):
    yaml_path = tiny_config_yaml(tmp_path / "c.yaml", train, held_out_data=[str(h) for h in held],
                                 held_out_fraction=0.5, batch_size=4, max_steps=2, save_every="2", **overrides)
    return load_config(yaml_path, {"out": str(tmp_path / "run")})


def _digest_of(paths: list[Path]) -> str:
    return hashlib.sha256("\n".join(sorted(pixel_digest(read_frame(p)) for p in paths)).encode()).hexdigest()


def test_r2_is_measured_on_exactly_the_held_out_frames(folders, tmp_path):
    import torch

    from pocus_edge.data.dataset import EvalFrames
    from pocus_edge.distill import checkpoint as ckpt
    from pocus_edge.distill.method import TokenDistillation
    from pocus_edge.distill.setup import build_models
    from pocus_edge.distill.trainer import held_out_r2

    train, held = folders
    cfg = _config(tmp_path, train, [held])
    data = prepare_data(cfg.validate(), init_distributed())
    assert sorted(f.path for f in data.held_out) == sorted(str(p) for p in held.glob("*.png"))
    assert sorted(f.path for f in data.train) == sorted(str(p) for p in train.glob("*.png"))  # fraction 0.5 unused

    summary = run_distillation(cfg)
    assert summary["held_out_images"] == HELD and summary["train_images"] == TRAIN
    assert summary["held_out_overlap_dropped"] == 0
    assert summary["held_out_data_sha256"] == _digest_of(sorted(held.glob("*.png")))
    assert str(held) in summary["held_out_source"] and "held_out_fraction unused" in summary["held_out_source"]
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {e["held_out_images"] for e in events if e.get("event") == "eval"} == {HELD}
    card = json.loads((tmp_path / "run" / "student.json").read_text())
    assert card["config"]["held_out_data"] == [str(held)]
    assert card["training"]["held_out_data_sha256"] == summary["held_out_data_sha256"]

    # the final R² recomputed here from the checkpoint on the held-out folder's frames is the one reported
    teacher, student = build_models(cfg, torch.device("cpu"))
    student.load_state_dict(ckpt.load_latest_valid(tmp_path / "run")[1]["model"])
    frames = sorted(data.held_out, key=lambda f: f.path)
    loader = torch.utils.data.DataLoader(EvalFrames(frames, cfg.image_size), batch_size=HELD)
    r2 = held_out_r2(teacher, student, loader, [], torch.device("cpu"), None, TokenDistillation())
    assert r2 == pytest.approx(summary["held_out_r2_end"], abs=1e-5)


def test_training_frames_with_held_out_pixels_are_dropped_and_counted(folders, tmp_path):
    train, held = folders
    mixed = tmp_path / "held_mixed"
    shutil.copytree(held, mixed)
    shutil.copy(train / "t000.png", mixed / "renamed_a.png")  # same pixels as two training frames, other names
    shutil.copy(train / "t005.png", mixed / "renamed_b.png")
    cfg = _config(tmp_path, train, [mixed])
    data = prepare_data(cfg.validate(), init_distributed())
    trained = {Path(f.path).name for f in data.train}
    assert len(trained) == TRAIN - 2 and not trained & {"t000.png", "t005.png"}
    assert len(data.held_out) == HELD + 2
    summary = run_distillation(cfg)
    assert summary["held_out_overlap_dropped"] == 2
    assert summary["train_images"] == TRAIN - 2 and summary["held_out_images"] == HELD + 2


def test_resume_with_other_held_out_data_is_refused(folders, tmp_path):
    train, held = folders
    mine = tmp_path / "held_copy"
    shutil.copytree(held, mine)
    cfg = _config(tmp_path, train, [mine])
    run_distillation(cfg)
    again = run_distillation(_config(tmp_path, train, [mine], resume=True))  # same frames: resumes
    assert again["steps"] == 2 and again["steps_this_session"] == 0
    other = tmp_path / "held_other"
    write_frames(other, range(200, 200 + HELD), "o")
    with pytest.raises(ConfigError, match=r"held_out_data: \[.*held_copy'\] -> \[.*held_other'\]"):
        run_distillation(_config(tmp_path, train, [other], resume=True))
    with pytest.raises(ConfigError, match=r"held_out_data: \[.*held_copy'\] -> \[\]"):
        run_distillation(_config(tmp_path, train, [], resume=True))
    write_frames(mine, range(300, 301), "h")  # same folder, one more frame: the fingerprint catches it
    with pytest.raises(ConfigError, match="held_out_data_sha256 differ .*--held-out-data frames"):
        run_distillation(_config(tmp_path, train, [mine], resume=True))
