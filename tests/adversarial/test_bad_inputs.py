"""Bad files and paths end as one `error:` line (exit 2) before any work, and leave nothing behind (issue 16,
items 8 and 10): wrongly typed YAML, --out that is a file, unsafe or undecodable manifest.csv, truncated images
and masks, unlabeled data for `finetune seg`, a pickle or a truncated file as --encoder, full or read-only disks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from .test_cli_usage import assert_one_error_line, run_pocus

TINY = {"teacher": "vit_small_patch16_dinov3", "teacher_weights": "random", "student": "resnet18", "image_size": 64,
        "batch_size": 8, "max_steps": 2, "num_workers": 0, "threads": 1, "quiet": True}

YAML_CASES = [
    ({"batch_size": "8"}, "batch_size must be an integer, got '8' (str); write the number without quotes"),
    ({"max_steps": 2.7}, "max_steps must be an integer, got 2.7 (float)"),
    ({"lr": "1e-4"}, "lr must be a number, got '1e-4' (str); write the number without quotes and with a dot"),
    ({"mixup": "yes"}, "mixup must be true or false, got 'yes'"),
    ({"blocks": "10,11"}, "blocks must be a list of integers, got '10,11'"),
    ({"teacher_kwargs": [1, 2]}, "teacher_kwargs must be a mapping"),
    ({"held_out_fraction": True}, "held_out_fraction must be a number, got True (bool)"),
]


@pytest.mark.parametrize(("bad", "expected"), YAML_CASES, ids=[next(iter(c[0])) for c in YAML_CASES])
def test_distill_yaml_value_of_wrong_type(bad, expected, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": [str(tmp_path)], **bad}))
    code, _, err = run_pocus(["distill", "--config", config, "--out", tmp_path / "run"], capsys)
    assert_one_error_line(code, err, f"--config {config}: ", expected)
    assert not (tmp_path / "run").exists()


def _out_is_file_cases(tmp: Path, out: Path) -> list[list]:
    return [
        ["distill", "--data", tmp, "--out", out, "--teacher-weights", "random"],
        ["finetune", "seg", "--data", tmp, "--out", out],
        ["predict", tmp / "bundle", tmp / "a.png", "--out", out],
        ["export", "unet-resnet50", "-t", "onnx", "--out", out],
        ["eval", tmp / "model.safetensors", "--data", tmp, "--out", out],
    ]


@pytest.mark.parametrize("index", range(5), ids=["distill", "finetune", "predict", "export", "eval"])
def test_out_that_is_an_existing_file(index, tmp_path, capsys):
    out = tmp_path / "taken.txt"
    out.write_text("keep me\n")
    code, _, err = run_pocus(_out_is_file_cases(tmp_path, out)[index], capsys)
    assert_one_error_line(code, err, f"--out {out}: is an existing file")
    assert out.read_text() == "keep me\n"


@pytest.fixture
def labelled(phantom_dir, tmp_path) -> Path:
    """A private copy of the phantom segmentation folder (images/, masks/, manifest.csv) to break."""
    return Path(shutil.copytree(phantom_dir, tmp_path / "data"))


def _rewrite_manifest(root: Path, edit) -> None:
    lines = (root / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_bytes(edit(lines))


def _first_file(root: Path, column: str) -> str:
    import csv

    with open(root / "manifest.csv", newline="") as f:
        return next(csv.DictReader(f))[column]


def _break_absolute(root):
    first = _first_file(root, "file")
    _rewrite_manifest(root, lambda ls: "\n".join([ls[0], ls[1].replace(first, str(root / first))] + ls[2:]).encode())


def _break_dotdot(root):
    first = _first_file(root, "mask")
    _rewrite_manifest(root, lambda ls: "\n".join([ls[0], ls[1].replace(first, "../" + first)] + ls[2:]).encode())


def _break_encoding(root):
    _rewrite_manifest(root, lambda ls: ("\n".join(ls[:3]) + "\n").encode() + b"caf\xe9," + "\n".join(ls[3:]).encode())


def _break_no_file_column(root):
    _rewrite_manifest(root, lambda ls: "\n".join([ls[0].replace("file", "path", 1)] + ls[1:]).encode())


def _truncate(root, column):
    path = root / _first_file(root, column)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_mask_column(root):
    import csv
    import io

    with open(root / "manifest.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "mask"} for r in csv.DictReader(f)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (root / "manifest.csv").write_text(buffer.getvalue())


def _unlabeled_folder(root):
    (root / "manifest.csv").unlink()
    shutil.rmtree(root / "masks")
    for image in (root / "images").iterdir():
        image.rename(root / image.name)
    (root / "images").rmdir()


DATA_CASES = [
    ("absolute-path", _break_absolute, ["manifest.csv: line 2: file", "points outside", "must be relative"]),
    ("dotdot-path", _break_dotdot, ["manifest.csv: line 2: mask '../", "points outside"]),
    ("non-utf8", _break_encoding, ["manifest.csv: line 4 is not UTF-8 (byte 0xe9)", "save the file as UTF-8"]),
    ("no-file-column", _break_no_file_column, ["no 'file' column"]),
    ("truncated-mask", lambda r: _truncate(r, "mask"), ["cannot decode this mask", "image file is truncated"]),
    ("truncated-image", lambda r: _truncate(r, "file"), ["cannot decode this image"]),
    ("no-mask-column", _drop_mask_column, ["have no mask", "segmentation needs a mask column"]),
    ("unlabeled-folder", _unlabeled_folder, ["no images found"]),
]
# the distillation corpus reads manifest.csv the same way (an absolute path used to crash in relative_to)
DATA_CASES = [("finetune", *case) for case in DATA_CASES] + [("distill", *case) for case in DATA_CASES[:3]]


def _command(command: str, data: Path, tmp: Path) -> list:
    if command == "finetune":
        return ["finetune", "seg", "--data", data, "--out", tmp / "run", "--epochs", "1", "--image-size", "64",
                "--architecture", "resnet18"]
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": [str(data)]}))
    return ["distill", "--config", config, "--out", tmp / "run"]


@pytest.mark.parametrize(("command", "name", "breaker", "expected"), DATA_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in DATA_CASES])
def test_bad_labelled_data_is_refused_before_making_out(command, name, breaker, expected, labelled, tmp_path,
                                                        capsys):
    breaker(labelled)
    code, _, err = run_pocus(_command(command, labelled, tmp_path), capsys)
    assert_one_error_line(code, err, *expected)
    assert not (tmp_path / "run").exists(), "a failed command must leave no output folder (finetune left splits.csv)"


def _card_for(path: Path) -> None:
    card = {"kind": "encoder", "architecture": "resnet18", "task": "embedding", "input_size": [64, 64],
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(card))


def _pickle_encoder(tmp: Path) -> Path:
    import torch

    path = tmp / "encoder.pt"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, path)
    return path


def _truncated_encoder(tmp: Path, keep: int | None) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp / "encoder.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep is not None else len(data) // 2])
    return path


ENCODER_CASES = [
    ("pickle", _pickle_encoder, "this is a PyTorch pickle (torch.save), not .safetensors"),
    ("truncated-header", lambda t: _truncated_encoder(t, 6), "not a complete .safetensors file"),
    ("truncated-body", lambda t: _truncated_encoder(t, None), "cannot read the weights"),
]


@pytest.mark.parametrize(("name", "make", "expected"), ENCODER_CASES, ids=[c[0] for c in ENCODER_CASES])
def test_finetune_refuses_a_bad_encoder_file(name, make, expected, labelled, tmp_path, capsys):
    encoder = make(tmp_path)
    _card_for(encoder)  # a card whose sha256 matches: only the file format itself can tell
    out = tmp_path / "run"
    code, _, err = run_pocus(["finetune", "seg", "--data", labelled, "--out", out, "--encoder", encoder,
                              "--epochs", "1", "--image-size", "64"], capsys)
    assert_one_error_line(code, err, str(encoder), expected)
    assert not out.exists()


DISK_CASES = [
    (errno.ENOSPC, "No space left on device", "cannot write /d/out/model.safetensors: No space left on device; "
                                              "choose another --out"),
    (errno.EROFS, "Read-only file system", "cannot write /d/out/model.safetensors: Read-only file system"),
    (errno.EACCES, "Permission denied", "/d/out/model.safetensors: Permission denied; check the path"),
]


@pytest.mark.parametrize(("number", "reason", "expected"), DISK_CASES, ids=["ENOSPC", "EROFS", "EACCES"])
def test_disk_errors_at_write_time_are_one_line(number, reason, expected, monkeypatch, capsys):
    """A disk that fills up (or turns read-only) while a command writes: OSError at the edge, not a traceback."""
    def full_disk(cfg):
        raise OSError(number, reason, "/d/out/model.safetensors")

    monkeypatch.setattr("pocus_edge.finetune.train.run_finetune", full_disk)  # imported by the command at call time
    code, _, err = run_pocus(["finetune", "seg", "--data", "/", "--out", "/d/out"], capsys)
    assert_one_error_line(code, err, expected)


def test_unwritable_out_parent_is_refused_before_work(tmp_path, monkeypatch, capsys):
    """Read-only folder for --out (simulated: the tests may run as root, for whom chmod does not bite)."""
    import os

    real_access = os.access
    monkeypatch.setattr("pocus_edge.limits.os.access", lambda p, m: False if Path(p) == tmp_path else
                        real_access(p, m))
    code, _, err = run_pocus(["predict", tmp_path / "b", tmp_path / "a.png", "--out", tmp_path / "preds"], capsys)
    assert_one_error_line(code, err, f"cannot write --out {tmp_path / 'preds'}: {tmp_path} is not writable")

