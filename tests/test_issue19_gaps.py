"""Issue 19's remaining gaps: one input rule for training and runtime, no silent threshold, `demo --quiet`,
readable help, one task check, project errors from the TensorRT backend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pocus_edge.data.readers import read_frame, read_frame_checked
from pocus_edge.errors import DataError
from pocus_edge.runtime.images import InputError, load_gray, to_gray01

RNG = np.random.default_rng(19)


def _colour_png(path, mode="RGB"):
    channels = 4 if mode == "RGBA" else 3
    pixels = RNG.integers(0, 256, (24, 32, channels), dtype=np.uint8)
    pixels[0, :4, :3] = [(0, 0, 250), (1, 0, 0), (255, 0, 0), (0, 255, 0)]  # 28.5, 0.299: ties and near-ties
    Image.fromarray(pixels, mode).save(path)
    return pixels


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_file_gives_the_same_pixels_in_training_and_runtime(tmp_path, mode):
    """Old: training used PIL's "L" (fixed-point 601 luma), runtime float luma: values differed by rounding."""
    pixels = _colour_png(tmp_path / "c.png", mode)
    train = read_frame(tmp_path / "c.png")
    expected = (pixels[..., :3].astype(np.int64) @ [299, 587, 114] + 500) // 1000
    np.testing.assert_array_equal(train, expected.astype(np.uint8))
    np.testing.assert_array_equal(load_gray(tmp_path / "c.png"), train.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(to_gray01(pixels), train.astype(np.float32) / 255.0)  # a uint8 array: same rule
    assert train[0, :4].tolist() == [29, 0, 76, 150]


def test_palette_and_bilevel_files_agree_too(tmp_path):
    rgb = Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    rgb.convert("P").save(tmp_path / "p.png")
    Image.fromarray(RNG.integers(0, 2, (16, 16), dtype=np.uint8) * 255).convert("1").save(tmp_path / "b.png")
    for name in ("p.png", "b.png"):
        np.testing.assert_array_equal(load_gray(tmp_path / name), read_frame(tmp_path / name) / np.float32(255.0))


def test_sixteen_bit_png_is_refused_by_training_and_runtime_alike(tmp_path):
    """Old: training min-max scaled a 16-bit PNG (it trained and evaluated), the runtime refused it in predict."""
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(tmp_path / "x16.png")
    expected = rf"{tmp_path}/x16.png: 16-bit image \(mode I;16\); window it to 8 bits .*DICOM file"
    with pytest.raises(InputError, match=expected):
        read_frame(tmp_path / "x16.png")
    with pytest.raises(InputError, match=expected):
        load_gray(tmp_path / "x16.png")
    with pytest.raises(DataError, match=rf"{tmp_path}/x16.png: cannot decode this mask \(16-bit image \(mode I;16\)"):
        read_frame_checked(tmp_path / "x16.png", "mask")


def test_float_file_in_range_agrees_and_out_of_range_is_refused(tmp_path):
    """Old: training min-max stretched a float TIFF; the runtime required [0, 1]."""
    values = RNG.random((16, 16), dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    train = read_frame(tmp_path / "f.tif")
    np.testing.assert_array_equal(train, np.rint(values * 255).astype(np.uint8))
    np.testing.assert_array_equal(load_gray(tmp_path / "f.tif"), train / np.float32(255.0))
    Image.fromarray(values * 1000, "F").save(tmp_path / "big.tif")
    for read in (read_frame, load_gray):
        with pytest.raises(InputError, match=r"big.tif: float values span \[.*\]; float input must lie in \[0, 1\]"):
            read(tmp_path / "big.tif")


def test_luma_weights_have_one_definition():
    import pocus_edge.data.dicom as dicom
    import pocus_edge.runtime.images as images

    assert images.LUMA_BT601 is dicom.LUMA_BT601
    assert dicom.LUMA_BT601.tolist() == [0.299, 0.587, 0.114]


@pytest.mark.parametrize("card, expected", [
    ({"task": "segmentation"}, "threshold is None; a segmentation card needs its mask threshold"),
    ({"task": "segmentation", "threshold": None}, "threshold is None"),
    ({"task": "segmentation", "threshold": True}, "threshold is True"),
    ({"task": "segmentation", "threshold": "0.5"}, "threshold is '0.5'"),
    ({"task": "segmentation", "threshold": 1.5}, "threshold is 1.5"),
    ({"task": "segmentation", "threshold": 0.7}, 0.7),
    ({"task": "segmentation", "threshold": 0}, 0.0),
    ({"task": "classification"}, None),
    ({"task": "embedding", "threshold": 0.5}, None),
])
def test_card_threshold_is_the_cards_own_never_a_silent_default(card, expected):
    from pocus_edge.errors import CheckpointError
    from pocus_edge.models.encoder_io import card_threshold

    if isinstance(expected, str):
        with pytest.raises(CheckpointError, match=rf"^m.json: the card's {expected}.*re-run pocus finetune$"):
            card_threshold(card, "m.json")
    else:
        assert card_threshold(card, "m.json") == expected


def test_json_files_that_hold_no_object_are_refused_with_the_callers_error(tmp_path):
    """Cards and manifests share one reader (duplicates D2); each keeps its own error type and wording."""
    from pocus_edge.errors import CheckpointError
    from pocus_edge.models.encoder_io import read_card
    from pocus_edge.runtime.manifest import BundleError, read_manifest

    (tmp_path / "m.safetensors").write_bytes(b"")
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"m.json: not a checkpoint card \(expected a JSON object\)"):
        read_card(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"m.json: not valid JSON .*; re-create a checkpoint card"):
        read_card(tmp_path / "m.safetensors")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text('"text"')
    with pytest.raises(BundleError, match=r"manifest.json: not a bundle manifest \(expected a JSON object\)"):
        read_manifest(tmp_path / "b")


def _all_help() -> dict[str, str]:
    """`pocus ... --help` of every command and group, in process."""
    import typer
    from typer.testing import CliRunner

    from pocus_edge.cli import app

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    runner = CliRunner()
    pages = {}
    for path in walk(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        pages[" ".join(path) or "pocus"] = result.output
    return pages


@pytest.fixture(scope="module")
def help_pages():
    return _all_help()


def _section(page: str, title: str) -> list[str]:
    lines = page.split(f"\n{title}:\n", 1)[1].split("\n\n", 1)[0].splitlines() if f"\n{title}:\n" in page else []
    return [line for line in lines if line.strip()]


def test_help_lists_whole_summaries_and_readable_metavars(help_pages):
    """Old: finetune, kd, corpus and bench suite summaries ended in '...'; repeatable options showed <list[Path]>."""
    for name, page in help_pages.items():
        for line in _section(page, "Commands"):
            assert not line.rstrip().endswith("..."), (name, line)
        for line in _section(page, "Options"):
            assert "<list[" not in line, (name, line)
        assert "{architectures}" not in page, name
    assert "--data DIR" in help_pages["distill"] and "--trusted-key <path>" in help_pages["info"]
    assert "--linear-probe" in help_pages["sweep"] and "Freeze the encoders" in help_pages["sweep"]
    finetune = " ".join(help_pages["finetune"].split())
    assert "widths, four or five, deepest first" in finetune and "--decoder-channels WIDTHS|auto" in finetune


def test_architecture_help_comes_from_the_registry(help_pages):
    """Old: hand-written lists that missed mobilenetv4_conv_small."""
    from pocus_edge.models.registry import ARCHITECTURES

    for command, option in (("finetune", "--architecture NAME"), ("kd", "--student NAME")):
        text = " ".join(help_pages[command].split())
        assert option in text
        for arch in ARCHITECTURES:
            assert arch in text, (command, arch)


@pytest.mark.parametrize("command", ["distill", "demo", "finetune", "qat", "eval", "sweep", "embed-plot", "kd",
                                     "bench latency", "bench parity", "bench suite", "bench import"])
def test_defaults_are_written_one_way(help_pages, command):
    """Old: `[x]`, `[default: x]` and `(default x)` side by side; now every default reads `[default: x]`."""
    import re

    text = " ".join("\n".join(_section(help_pages[command], "Options")).split())
    assert "(default" not in text
    for bracket in re.findall(r"\[([^\[\]]*)\]", text):
        assert bracket.startswith(("default: ", "required")), (command, bracket)


def test_demo_quiet_prints_nothing_and_json_writes_the_summary(tmp_path, capsys, monkeypatch):
    """Old: `pocus demo --quiet` printed the summary table although --quiet promises none; no --json."""
    import json

    import pocus_edge.demo as demo_module
    from pocus_edge.cli import _run, app

    monkeypatch.setattr(demo_module, "run_demo", lambda out, data, steps, quiet: {"seconds": 1.5, "bundle": "b"})
    _run(app, ["demo", "--quiet", "--out", str(tmp_path / "d")], prog_name="pocus")
    assert capsys.readouterr().out == ""
    _run(app, ["demo", "--quiet", "--out", str(tmp_path / "d"), "--json", str(tmp_path / "s.json")], prog_name="pocus")
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "s.json").read_text()) == {"seconds": 1.5, "bundle": "b"}
    _run(app, ["demo", "--out", str(tmp_path / "d")], prog_name="pocus")
    printed = capsys.readouterr().out
    assert "pocus demo" in printed and "1.5 s" in printed  # 'seconds' is shown as a time with its unit


@pytest.mark.parametrize("key, expected", [("seconds", ("time", "408.5 s")),
                                           ("seconds_this_session", ("time this session", "408.5 s")),
                                           ("wall_time_s", ("wall time", "408.5 s"))])
def test_seconds_rows_carry_their_unit(key, expected):
    from pocus_edge.cli_common import human_row

    assert human_row(key, 408.5) == expected


@pytest.mark.parametrize("args", [["finetune", "segm", "--data", "d", "--out", "o"],
                                  ["sweep", "segm", "--data", "d", "--out", "o"],
                                  ["kd", "segm", "--teacher", "t", "--transfer", "t", "--data", "d", "--out", "o"]])
def test_task_argument_is_checked_once_with_one_error_type(args, capsys):
    """Old: finetune and sweep raised PocusError, kd ConfigError, with copies of the check."""
    from adversarial.test_cli_usage import assert_one_error_line, run_pocus

    from pocus_edge.cli_common import task_argument
    from pocus_edge.errors import ConfigError

    code, _, err = run_pocus(args, capsys)
    assert_one_error_line(code, err, "task 'segm': use seg (segmentation, U-Net) or cls (classification)")
    with pytest.raises(ConfigError, match="task 'segm'"):
        task_argument("segm")
    assert task_argument("seg") == "segmentation" and task_argument("cls") == "classification"


@pytest.mark.parametrize("result, call", [((2, None), "cudaMalloc"), ((700,), "cudaStreamSynchronize")])
def test_tensorrt_cuda_failures_are_project_errors_that_say_what_to_do(result, call):
    """Old: RuntimeError('CUDA error 2'), a traceback for the user."""
    from pocus_edge.errors import PocusError
    from pocus_edge.runtime.backends.tensorrt_backend import _check

    with pytest.raises(PocusError, match=rf"CUDA call {call} failed \(\d+\); check the GPU with nvidia-smi .*"
                                         "backend='onnxruntime'"):
        _check(result, call)
    assert _check((0, 7), call) == 7 and _check((0, 1, 2), call) == [1, 2]
