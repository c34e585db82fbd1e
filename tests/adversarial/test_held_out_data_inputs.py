"""Bad `pocus distill --held-out-data` folders end as one `error:` line (exit 2) before any run folder is made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from test_distill_held_out_data import write_frames

from .test_cli_usage import assert_one_error_line, run_pocus

TINY = {"teacher": "vit_small_patch16_dinov3", "teacher_weights": "random", "student": "resnet18", "image_size": 64,
        "batch_size": 4, "max_steps": 2, "num_workers": 0, "threads": 1, "quiet": True}


def _missing(tmp: Path, train: Path) -> Path:
    return tmp / "no_such_folder"


def _empty(tmp: Path, train: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _unreadable(tmp: Path, train: Path) -> Path:
    (tmp / "broken").mkdir()
    (tmp / "broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return tmp / "broken"


def _too_many(tmp: Path, train: Path) -> Path:
    write_frames(tmp / "many", range(100, 109), "h")  # 9 frames, max_held_out is 8 below
    return tmp / "many"


def _the_training_folder(tmp: Path, train: Path) -> Path:
    shutil.copytree(train, tmp / "copy")
    return tmp / "copy"


CASES = [
    (_missing, "no such folder; pass a folder of ultrasound frames to measure token R² on"),
    (_empty, "no usable images found in"),
    (_unreadable, "no usable images found in {held}; 1 file(s) could not be read"),
    (_too_many, "9 frames, more than max_held_out (8; "),
    (_the_training_folder, "every training frame of --data has the pixels of a held-out frame"),
]


@pytest.mark.parametrize(("make", "expected"), CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_held_out_data_is_one_clear_error(make, expected, tmp_path, capsys):
    train = tmp_path / "train"
    write_frames(train, range(8), "t")
    held = make(tmp_path, train)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": [str(train)], "max_held_out": 8}))
    code, _, err = run_pocus(["distill", "--config", config, "--out", tmp_path / "run", "--held-out-data", held],
                             capsys)
    assert_one_error_line(code, err, f"--held-out-data {held}", expected.format(held=held))
    assert not (tmp_path / "run").exists()
