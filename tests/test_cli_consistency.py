"""Issue 19 items 5 and 9: one meaning for each flag across commands, errors of our own types, progress bars,
third-party chatter hidden unless --verbose, readable help, tables and plots."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from pocus_edge.cli import _run, app
from pocus_edge.cli_common import emit_json, human_row, json_stdout_argv
from pocus_edge.errors import ConfigError


def _commands():
    """(path, click command) of every leaf command of `pocus`."""
    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


def _option(cmd, name):
    return next((p for p in cmd.params if name in getattr(p, "opts", [])), None)


def _with(name):
    """Commands having option `name`."""
    return [pytest.param(path, cmd, id=path) for path, cmd in _commands() if _option(cmd, name)]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        _run(app, args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# --- the same flag means the same thing in every command ------------------------------------------------------

@pytest.mark.parametrize("path,cmd", _with("--json"))
def test_every_json_option_names_a_file(path, cmd):
    option = _option(cmd, "--json")
    assert not option.is_flag, f"pocus {path} --json is still a stdout flag"
    assert option.metavar == "FILE" and "--json -" in option.help


@pytest.mark.parametrize("path,cmd", _with("--quiet"))
def test_every_quiet_command_has_verbose(path, cmd):
    assert _option(cmd, "--verbose") is not None, f"pocus {path} has --quiet but no --verbose"


@pytest.mark.parametrize("path,cmd", _with("--out"))
def test_every_out_has_the_short_o(path, cmd):
    assert "-o" in _option(cmd, "--out").opts, f"pocus {path} --out lacks -o"


@pytest.mark.parametrize("path", ["eval", "qat", "bench parity"])
def test_split_seed_is_one_name_with_the_old_seed_kept(path):
    cmd = dict(_commands())[path]
    option = _option(cmd, "--split-seed")
    assert option is not None and "--seed" in option.opts


@pytest.mark.parametrize("args,expected", [
    (["info", "B", "--json"], ["info", "B", "--json", "-"]),  # the old stdout flag, at the end
    (["distill", "--json", "--config", "c.yaml"], ["distill", "--json", "-", "--config", "c.yaml"]),
    (["export", "m", "-t", "onnx", "--quiet", "--json"], ["export", "m", "-t", "onnx", "--quiet", "--json", "-"]),
    (["verify", "B", "--json", "r.json"], ["verify", "B", "--json", "r.json"]),  # a file: unchanged
    (["info", "B", "--json", "-"], ["info", "B", "--json", "-"]),
    (["bench", "latency", "B", "--json"], ["bench", "latency", "B", "--json", "-"]),  # sub-groups too
    (["info", "--", "--json"], ["info", "--", "--json"]),  # after --: an argument
])
def test_bare_json_means_stdout(args, expected):
    assert json_stdout_argv(args, typer.main.get_command(app)) == expected


def test_bare_json_is_left_alone_where_json_is_still_a_flag():
    flag_app = typer.Typer()

    @flag_app.command()
    def one(json_out: bool = typer.Option(False, "--json")) -> None:  # pragma: no cover - never run
        pass

    @flag_app.command()
    def two() -> None:  # pragma: no cover - never run
        pass

    assert json_stdout_argv(["one", "--json"], typer.main.get_command(flag_app)) == ["one", "--json"]


@pytest.mark.parametrize("name,make,error", [
    ("folder", lambda p: p.mkdir(), "is a folder"),
    ("image.png", lambda p: p.write_bytes(b"\x89PNG"), "exists and is not a .json file"),
    ("IM0001", lambda p: p.write_bytes(b"DICM"), "exists and is not a .json file"),  # DICOM files have no suffix
])
def test_json_never_overwrites_an_input(tmp_path, capsys, name, make, error):
    """`pocus predict B --json img.png` meant "--json (flag) + an image" before: now it must not overwrite it."""
    target = tmp_path / name
    make(target)
    before = target.read_bytes() if target.is_file() else None
    code, _, err = _cli(["info", str(tmp_path), "--json", str(target)], capsys)
    assert code == 2 and error in " ".join(err.split()) and "--json -" in " ".join(err.split())
    assert before is None or target.read_bytes() == before


def test_emit_json_to_stdout_and_to_a_file(tmp_path, capsys):
    assert emit_json(Path("-"), {"dice": float("nan"), "n": 1}) is True
    assert json.loads(capsys.readouterr().out) == {"dice": None, "n": 1}  # valid JSON: NaN is null
    (tmp_path / "old.json").write_text("{}")
    assert emit_json(tmp_path / "old.json", {"a": 1}) is False
    assert json.loads((tmp_path / "old.json").read_text()) == {"a": 1} and capsys.readouterr().out == ""
    assert emit_json(None, {"a": 1}) is False


def test_json_file_and_stdout_on_a_real_bundle(bundle_factory, tmp_path, capsys):
    bundle = bundle_factory("onnx", "fp32", model="encoder-resnet50")
    code, out, _ = _cli(["info", str(bundle), "--json"], capsys)  # the old flag: stdout, nothing else
    assert code == 0 and json.loads(out)["bundle_seal"]["digest"]
    code, out, _ = _cli(["info", str(bundle), "--json", str(tmp_path / "info.json")], capsys)
    assert code == 0 and "checksums" in out  # the table still shows
    assert json.loads((tmp_path / "info.json").read_text())["task"] == "embedding"
    code, out, _ = _cli(["verify", str(bundle), "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["passed"] is True


# --- help, tables and numbers for people ----------------------------------------------------------------------

def test_help_keeps_bracketed_defaults_and_whole_option_names(capsys):
    code, out, _ = _cli(["export", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "[checkpoint's, or 256]" in text and "multiple of 32 ." not in text  # rich markup ate "[...]" before
    assert "--fold-upsample / --no-fold-upsample" in text
    assert "mlpackage->coreml" in text and "…" not in out


@pytest.mark.parametrize("path", [path for path, cmd in _commands() if any(
    getattr(p, "nargs", 1) == -1 or getattr(p, "multiple", False) for p in cmd.params)])
def test_repeatable_values_show_their_element_type_in_help(path, capsys):
    code, out, _ = _cli([*path.split(), "--help"], capsys)
    assert code == 0 and "<list[" not in out, f"pocus {path} --help shows a Python list type"


def test_bench_help_says_what_each_subcommand_does(capsys):
    code, out, _ = _cli(["bench", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    for name, words in (("latency", "timings on this host"), ("parity", "agreement with the fp32 checkpoint"),
                        ("import", "merge phone results"), ("coreml-report", "Core ML timings on a Mac")):
        assert f"{name}:" in text and words in text


@pytest.mark.parametrize("key,value,expected", [
    ("seconds_this_session", 408.5, ("time this session", "408.5 s")),
    ("wall_time_s", 3.04, ("wall time", "3.04 s")),
    ("wall time (s)", 1234.56, ("wall time", "1234.6 s")),
    ("images_per_s", 12.345, ("images/s", "12.35")),
    ("held_out_r2_end", 0.812345, ("held out r2 end", "0.8123")),
    ("train_images", 12000, ("train images", "12,000")),
    ("hd95_mm", float("nan"), ("hd95 mm", "undefined")),
    ("ranks_in_sync", True, ("ranks in sync", "yes")),
    ("data_list_sha256", None, ("data list sha256", "-")),
])
def test_summary_numbers_are_for_people(key, value, expected):
    assert human_row(key, value) == expected


def test_markdown_tables_are_not_wrapped_when_piped(tmp_path, capsys, monkeypatch):
    """bench latency's table goes to stdout line for line (rich wrapped it at 80 columns when piped)."""
    from pocus_edge.bench import commands

    row = "| " + " | ".join(f"column {i}" for i in range(20)) + " |"
    monkeypatch.setattr("pocus_edge.bench.latency.check_bundles", lambda bundles: None)
    monkeypatch.setattr(commands, "runnable_bundles", lambda bundles, backend: bundles)
    monkeypatch.setattr("pocus_edge.bench.latency.measure_latency", lambda *a, **k: [])
    monkeypatch.setattr("pocus_edge.bench.report.latency_table", lambda rows: row + "\n")
    code, out, _ = _cli(["bench", "latency", str(tmp_path), "--no-cold-start"], capsys)
    assert code == 0 and row in out.splitlines() and len(row) > 200


# --- bench latency: skip what cannot run here; plots that can be read ----------------------------------------

def test_bench_latency_skips_bundles_this_host_cannot_run(tmp_path, capsys, monkeypatch):
    from pocus_edge.bench.commands import runnable_bundles
    from pocus_edge.errors import PocusError
    from pocus_edge.runtime.backends import BackendUnavailable

    def fake_load(bundle, threads=None, backend=None):
        if "coreml" in str(bundle):
            raise BackendUnavailable("Core ML predicts only on macOS; on this machine use the onnx or tflite bundle")

    monkeypatch.setattr("pocus_edge.runtime.load", fake_load)
    kept = runnable_bundles([tmp_path / "m-coreml-fp16", tmp_path / "m-onnx-fp32"], None)
    err = " ".join(capsys.readouterr().err.split())
    assert kept == [tmp_path / "m-onnx-fp32"]
    assert "skipped" in err and "m-coreml-fp16" in err and "only on macOS" in err
    with pytest.raises(PocusError, match="no bundle can run on this host"):
        runnable_bundles([tmp_path / "m-coreml-fp16"], None)


def _rows():
    def row(target, precision, threads, p50):
        return {"model": "unet", "target": target, "precision": precision, "backend": "onnxruntime",
                "threads": threads, "device": {"label": "host"},
                "latency_ms": {"p10": p50 * 0.9, "p50": p50, "p90": p50 * 1.3}}

    return [row("onnx", "fp32", 1, 40.0), row("onnx", "int8", 1, 20.0), row("tflite", "fp16", 2, 30.0),
            {**row("baseline", "fp32", 2, 50.0), "latency_ms": {"p50": 50.0, "p90": None}}]


def test_latency_plot_has_legend_error_bars_zero_axis_and_metric(tmp_path, monkeypatch):
    from pocus_edge.bench import plots

    saved = {}

    def keep(fig, out):
        saved["fig"] = fig
        fig.savefig(out, dpi=50, bbox_inches="tight")
        return out

    monkeypatch.setattr(plots, "_save", keep)
    out = plots.plot_latency(_rows(), tmp_path / "lat.png")
    assert out.stat().st_size > 1000
    axes = saved["fig"].axes
    assert len(axes) == 2  # one panel per thread count
    for ax in axes:
        assert ax.get_ylim()[0] == 0 and "latency" in ax.get_ylabel() and "ms" in ax.get_ylabel()
        from matplotlib.container import ErrorbarContainer

        assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)  # p10-p90 bars
    legend = axes[-1].get_legend()
    assert legend is not None and {t.get_text() for t in legend.get_texts()} >= {"fp32", "int8", "fp16", "baseline"}
    assert plots.latency_error_bars(_rows()) == [[4.0, 2.0, 3.0, 0.0], [pytest.approx(12.0), 6.0,
                                                                      pytest.approx(9.0), 0.0]]


def test_plots_keep_rotated_labels_inside_the_png(tmp_path):
    """Saved with a tight box: the image grows to hold the rotated tick labels instead of cutting them off."""
    from PIL import Image

    from pocus_edge.bench.plots import plot_latency

    rows = [{**r, "model": "a-very-long-model-name-" * 2} for r in _rows()]
    out = plot_latency(rows, tmp_path / "lat.png")
    gray = np.asarray(Image.open(out).convert("L"))
    assert (gray[-3:] > 250).all()  # the bottom edge is margin, not a cut through label text


def test_bench_latency_plot_must_be_png(tmp_path, capsys):
    code, _, err = _cli(["bench", "latency", str(tmp_path), "--plot", str(tmp_path / "p.jpg")], capsys)
    assert code == 2 and "--plot" in err and ".png" in err


# --- quiet by default ------------------------------------------------------------------------------------------

_CHATTER = """
import os, sys
from pocus_edge.chatter import hidden_native_stderr
verbose = sys.argv[1] == "1"
with hidden_native_stderr(verbose):
    os.write(2, b"I tensorflow/core: oneDNN custom operations are on\\n")
    print("ours: a warning that matters", file=sys.stderr)
    if sys.argv[2] == "fail":
        raise RuntimeError("a bug")
print("after", file=sys.stderr)
"""


@pytest.mark.parametrize("verbose,outcome,shows_chatter", [("0", "ok", False), ("1", "ok", True),
                                                           ("0", "fail", True)])
def test_native_chatter_is_hidden_unless_verbose_or_a_crash(verbose, outcome, shows_chatter):
    proc = subprocess.run([sys.executable, "-c", _CHATTER, verbose, outcome], capture_output=True, text=True,
                          timeout=60)
    assert "ours: a warning that matters" in proc.stderr
    assert ("oneDNN custom operations" in proc.stderr) is shows_chatter
    assert ("after" in proc.stderr) is (outcome == "ok")  # stderr is restored after the command
    if outcome == "fail":
        assert "hidden library output" in proc.stderr and "RuntimeError: a bug" in proc.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_library_loggers_and_warnings_are_quiet_unless_verbose(verbose):
    import warnings

    from pocus_edge.cli_common import setup_logging

    names = ("coremltools", "absl", "jax")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        with warnings.catch_warnings(record=True) as caught:
            setup_logging(False, verbose)
            warnings.warn_explicit("old version", UserWarning, "x.py", 1, module="coremltools.models")
            warnings.warn_explicit("do this", UserWarning, "y.py", 1, module="pocus_edge.export.coreml")
        assert [str(w.message) for w in caught] == (["old version", "do this"] if verbose else ["do this"])
        for name in names:
            assert logging.getLogger(name).isEnabledFor(logging.WARNING) is verbose
        assert logging.getLogger("pocus_edge.export").isEnabledFor(logging.INFO)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --- progress: finetune per step, export per stage, eval per image --------------------------------------------

def test_progress_of_finetune_export_and_eval(tmp_path, monkeypatch, caplog):
    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.distill import progress

    steps, stages, advanced = [], [], []
    monkeypatch.setattr(progress.TrainProgress, "update", lambda self, step, loss, ips, label=None:
                        steps.append((step, label)))
    real_begin = progress.StageProgress.begin
    monkeypatch.setattr(progress.StageProgress, "begin", lambda self, name: (stages.append(name),
                                                                             real_begin(self, name)))
    monkeypatch.setattr(progress.ItemProgress, "advance", lambda self, n=1: advanced.append(n))
    caplog.set_level(logging.INFO)  # what the CLI sets without --quiet; pytest restores it after the test
    data = write_phantom_dataset(tmp_path / "ph", 24, size=(64, 64), seed=2)
    from pocus_edge.finetune.train import FinetuneConfig, run_finetune

    run_finetune(FinetuneConfig(task="segmentation", data=str(data), out=str(tmp_path / "run"),
                                architecture="resnet18", epochs=2, image_size=64, batch_size=4,
                                max_steps_per_epoch=2, threads=1))
    assert [s for s, _ in steps] == [1, 2, 3, 4]  # one update per optimizer step, numbered across epochs
    assert steps[0][1].startswith("finetune epoch 1/2") and steps[-1][1].startswith("finetune epoch 2/2")
    from pocus_edge.export import export

    export(str(tmp_path / "run" / "model.safetensors"), "onnx", "fp32", tmp_path / "bundle", parity_data=data,
           num_parity=4)
    assert stages == ["convert", "parity on 4 frames", "self-test reference vectors", "write bundle"]
    from pocus_edge.finetune.eval_cli import run_eval

    report = run_eval(tmp_path / "bundle", data, "all", 0, 1, None, progress=True)
    assert sum(advanced) == report["metrics"]["images"] == 24


def test_stage_progress_shows_each_stage_with_its_time(capsys):
    from pocus_edge.distill.progress import StageProgress

    stages = StageProgress("export onnx int8", enabled=True)
    stages.begin("calibrate on 8 frames + convert")
    stages.begin("parity on 4 frames")
    stages.close(failed=True)
    err = capsys.readouterr().err
    assert "export onnx int8: calibrate on 8 frames + convert" in err and "parity on 4 frames" in err
    assert "failed" in err and "0:00:0" in err  # elapsed time per stage
    quiet = StageProgress("export", enabled=False)
    quiet.begin("convert")
    quiet.close()
    assert capsys.readouterr().err == ""


# --- errors a user can reach are ours, and say what to do -----------------------------------------------------

def test_raw_input_folding_refusals_are_export_errors():
    import torch.nn as nn

    from pocus_edge.export.base import ExportError
    from pocus_edge.export.wrappers import fold_raw_input

    mean, std = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)
    with pytest.raises(ExportError, match="no 3-channel input convolution.*without --raw-input"):
        fold_raw_input(nn.Sequential(nn.Conv2d(1, 4, 3)), mean, std, 32)
    with pytest.raises(ExportError, match="not an ordinary zero-padded one.*without --raw-input"):
        fold_raw_input(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")), mean, std, 32)

    class Grouped(nn.Sequential):
        groups = 2

    with pytest.raises(ExportError, match="grouped.*without --raw-input"):
        fold_raw_input(Grouped(nn.Conv2d(3, 4, 3)), mean, std, 32)


def test_parity_shape_mismatch_is_an_export_error():
    from pocus_edge.export.base import ExportError
    from pocus_edge.export.parity import compare

    with pytest.raises(ExportError, match=r"output shape \(2, 3\) differs from PyTorch's \(2, 4\).*re-export"):
        compare("classification", np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32), None)


def _manifest(dtype: str) -> dict:
    from pocus_edge.runtime.preprocess import normalization

    return {"inputs": [{"name": "image", "dtype": dtype, "layout": "NCHW"}], "preprocessing": normalization(32),
            "outputs": [{"name": "logits", "layout": "NCHW"}]}


def test_integer_input_without_quantization_is_a_bundle_error():
    from pocus_edge.runtime.manifest import BundleError
    from pocus_edge.runtime.preprocess import model_input

    with pytest.raises(BundleError, match="input 'image' is int8 but has no quantization.*re-export"):
        model_input([np.zeros((32, 32), np.float32)], _manifest("int8"))


def test_integer_output_without_quantization_is_a_bundle_error():
    from pocus_edge.runtime.manifest import BundleError
    from pocus_edge.runtime.results import output_as_float

    with pytest.raises(BundleError, match="output 'logits' is int8 but has no quantization.*re-export"):
        output_as_float(np.zeros((1, 2), np.int8), _manifest("float32"))


def test_overlay_of_another_frame_is_an_input_error():
    from pocus_edge.runtime.images import InputError
    from pocus_edge.runtime.results import SegmentationResult

    result = SegmentationResult(mask=np.zeros((40, 50), np.uint8), probabilities=np.zeros((1, 40, 50), np.float32),
                                labels=["background", "lesion"])
    assert result.overlay(np.zeros((40, 50), np.uint8)).shape == (40, 50, 3)
    with pytest.raises(InputError, match="image is 30x30 but the mask is 40x50; pass the frame"):
        result.overlay(np.zeros((30, 30), np.uint8))


def test_tflite_wrong_input_dtype_is_an_input_error():
    from pocus_edge.runtime.backends.tflite_backend import TfliteBackend
    from pocus_edge.runtime.images import InputError

    backend = TfliteBackend.__new__(TfliteBackend)  # no interpreter needed: the check comes first
    backend.input = {"dtype": np.int8}
    with pytest.raises(InputError, match="takes int8 input, got float32: pass the array Predictor.preprocess"):
        backend.run(np.zeros((1, 3, 8, 8), np.float32))


def test_json_target_check_is_a_config_error(tmp_path):
    from pocus_edge.cli_common import _check_json_target

    with pytest.raises(ConfigError, match="is a folder; give the file to write"):
        _check_json_target(tmp_path)
    assert _check_json_target(tmp_path / "new.txt") == tmp_path / "new.txt"
