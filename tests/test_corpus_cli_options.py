"""`pocus corpus scan|select` take the shared options: --json FILE (bare --json: stdout), -q/-v, -o."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pocus_edge.cli import _run, app


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(4):
        grid = np.random.default_rng(k).integers(0, 256, (6, 6)).astype(np.uint8)
        Image.fromarray(grid).resize((64, 64), Image.Resampling.BICUBIC).save(folder / f"f{k}.png")
    return folder


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(app, args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_scan_bare_json_prints_the_summary_to_stdout_only(frames, tmp_path, capsys):
    code, out, err = _cli(["corpus", "scan", "--data", str(frames), "-o", str(tmp_path / "c.json"), "-q", "--json"],
                          capsys)
    assert code == 0, err
    assert json.loads(out)["frames"] == 4 and (tmp_path / "c.json").is_file()


def test_scan_json_file_keeps_the_line_and_verbose_is_accepted(frames, tmp_path, capsys):
    summary = tmp_path / "summary.json"
    code, out, err = _cli(["corpus", "scan", "--data", str(frames), "--out", str(tmp_path / "c.json"), "-v",
                           "--json", str(summary)], capsys)
    assert code == 0, err
    assert "unique_frames" not in out and json.loads(summary.read_text())["unique_frames"] == 4  # a file, not stdout
    assert "unique frames 4" in " ".join(err.split())


def test_select_writes_its_summary_to_the_json_file(frames, tmp_path, capsys):
    summary = tmp_path / "select.json"
    code, out, err = _cli(["corpus", "select", "--data", str(frames), "--budget", "2", "--method", "random",
                           "-o", str(tmp_path / "list.txt"), "--quiet", "--json", str(summary)], capsys)
    assert code == 0, err
    assert out == "" and err == ""  # --quiet: nothing but the files
    assert json.loads(summary.read_text())["selected"] == 2
    assert len((tmp_path / "list.txt").read_text().split("\n")) >= 2


def test_json_never_overwrites_a_frame(frames, tmp_path, capsys):
    image = frames / "f0.png"
    before = image.read_bytes()
    code, _, err = _cli(["corpus", "scan", "--data", str(frames), "-o", str(tmp_path / "c.json"), "--json",
                         str(image)], capsys)
    assert code == 2 and "exists and is not a .json file" in " ".join(err.split())
    assert image.read_bytes() == before
