"""Bad frame lists and bad `pocus corpus` options: one case = one bad input and the exact error it gets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from pocus_edge.data.corpus import scan_corpus
from pocus_edge.data.frame_list import keep_listed
from pocus_edge.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frames")
    for i in range(4):  # four distinct patterns (not near duplicates of each other)
        grid = np.random.default_rng(i).integers(0, 256, (4, 4)).astype(np.uint8)
        Image.fromarray(grid).resize((32, 32), Image.Resampling.BICUBIC).save(root / f"f{i}.png")
    (root / "zz_copy_of_f0.png").write_bytes((root / "f0.png").read_bytes())
    (root / "broken.png").write_bytes(b"not a png")
    return root


def _outside(tmp: Path) -> str:
    path = tmp / "elsewhere.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(path)
    return str(path)


LIST_CASES = [
    ("missing file", lambda d, t: f"{d}/f0.png\n{d}/gone.png\n", "line 2: '{d}/gone.png': no such file"),
    ("outside --data", lambda d, t: f"{_outside(t)}\n", "is not a frame of --data"),
    ("frame index of a still image", lambda d, t: f"{d}/f1.png#3\n", "is not a frame of --data"),
    ("exact duplicate dropped by the scan", lambda d, t: f"{d}/zz_copy_of_f0.png\n",
     "an exact duplicate of {d}/f0.png, dropped by the scan"),
    ("unreadable file", lambda d, t: f"{d}/broken.png\n", "the scan skipped it"),
    ("listed twice", lambda d, t: f"{d}/f1.png\n\n{d}/./f1.png\n", "line 3: '{d}/./f1.png' is listed twice (first on "
     "line 1)"),
    ("only comments", lambda d, t: "# nothing here\n\n", "lists no frames"),
    ("not UTF-8", lambda d, t: b"\xff\xfe\xfa".decode("latin-1"), "not UTF-8 text"),
]


@pytest.mark.parametrize("content, expected", [c[1:] for c in LIST_CASES], ids=[c[0] for c in LIST_CASES])
def test_bad_frame_list(folder, tmp_path, content, expected):
    corpus = scan_corpus([folder])
    path = tmp_path / "list.txt"
    text = content(folder, tmp_path)
    if "\xff" in text:
        path.write_bytes(b"\xff\xfe\xfa")
    else:
        path.write_text(text)
    with pytest.raises(DataError) as info:
        keep_listed(corpus, path)
    assert f"frame list {path}" in str(info.value)
    assert expected.format(d=folder) in str(info.value)


def test_good_list_keeps_scan_order_and_counts_the_rest(folder, tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(f"# header\n{folder}/f3.png\n{os.path.relpath(folder / 'f1.png')}\n")  # relative to the cwd
    listed, dropped = keep_listed(scan_corpus([folder]), path)
    assert [Path(f.path).name for f in listed.frames] == ["f1.png", "f3.png"] and dropped == 2
    assert len(listed.frame_digests) == 2


CLI_CASES = [
    ("budget zero", ["select", "--budget", "0", "--method", "random"], "--budget '0': use a frame count"),
    ("budget over 100%", ["select", "--budget", "101%", "--method", "random"], "--budget '101%'"),
    ("unknown method", ["select", "--budget", "2", "--method", "best"], "--method 'best': choose one of dual-rank, "
     "kcenter, random"),
    ("kcenter without a teacher", ["select", "--budget", "2", "--method", "kcenter"],
     "--method kcenter needs --teacher-weights"),
    ("one proxy epoch", ["select", "--budget", "2", "--teacher-weights", "random", "--proxy-epochs", "1"],
     "--proxy-epochs 1: the quality rank needs at least 2 epochs"),
    ("teacher kwargs not JSON", ["select", "--budget", "2", "--teacher-weights", "random", "--teacher-kwargs",
                                 "{depth: 3}"], "--teacher-kwargs '{depth: 3}': not JSON"),
    ("near threshold too large", ["scan", "--near-threshold", "40"], "--near-threshold 40: expected an integer"),
    ("image size not a multiple of 32", ["select", "--budget", "2", "--method", "random", "--image-size", "100"],
     "--image-size"),
    ("budget above the pool", ["select", "--budget", "9", "--method", "random"],
     "--budget 9 means 9 frames, but only 4 of 4 usable frames"),
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_corpus_option(folder, tmp_path, args, expected):
    out = tmp_path / ("corpus.json" if args[0] == "scan" else "list.txt")
    result = run_cli("corpus", *args, "--data", str(folder), "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: " + expected in " ".join((result.stdout + result.stderr).split())
    assert not out.exists()


def test_kd_transfer_list_missing(tmp_path):
    result = run_cli("kd", "seg", "--teacher", str(tmp_path / "t.safetensors"), "--transfer", str(tmp_path),
                     "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--transfer-list",
                     str(tmp_path / "nope.txt"))
    assert result.returncode == 2
    assert f"error: --transfer-list {tmp_path / 'nope.txt'}: no such file" in " ".join(result.stdout.split()) + \
        " ".join(result.stderr.split())
