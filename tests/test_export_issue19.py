"""Issue 19, export side: one home for post-processing and for running a torch model on frames, export progress per
stage (calibration, search, parity with item counts), QAT evaluation by the card, and our Core ML zero-scale warning.

Each test names what the old code did. Models are tiny (a few convolutions at 32 px) so the file stays fast.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pocus_edge.errors import ConfigError
from pocus_edge.models.tasks import TaskSpec

SIZE = 32


class TinySegmenter(nn.Module):
    """3 -> 16 -> 32 -> 1 channels; `body` holds 32 x 16 x 3 x 3 = 4608 weights (Core ML quantises > 2048)."""

    def __init__(self, dead_channel: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 1, 1)
        if dead_channel is not None:
            with torch.no_grad():
                self.body.weight[dead_channel] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(torch.relu(self.stem(x)))))


def _use_tiny(monkeypatch, model: nn.Module) -> None:
    spec = TaskSpec(name="tiny-seg", task="segmentation", encoder="tiny", labels=["background", "lesion"],
                    image_size=SIZE, threshold=0.5, source="test")
    monkeypatch.setattr("pocus_edge.export.api.resolve_model", lambda model_arg, size: (model.eval(), spec))


# --- parity: the model's post-processing block, and the project's error -----------------------------------------

def test_unknown_parity_metric_is_a_config_error_naming_the_option():
    from pocus_edge.export.parity import thresholds_for

    with pytest.raises(ConfigError, match=r"--parity-threshold bogus=1\.0: .*segmentation.*choose from dice_mean"):
        thresholds_for("segmentation", "int8", {"bogus": 1.0})  # old: KeyError, patched into ConfigError in api.py


@pytest.mark.parametrize("task, post, ref, out, metric, expected", [
    # a 2-channel, 2-label model: the runtime's block says sigmoid per channel; old parity inferred softmax
    ("segmentation", {"activation": "sigmoid", "threshold": 0.5, "mask_resize": "bilinear_probabilities"},
     np.zeros((1, 2, 2, 2), np.float32), np.full((1, 2, 2, 2), 2.0, np.float32), "prob_abs_diff_mean",
     float(1 / (1 + np.exp(-2.0)) - 0.5)),
    # a Core ML classifier outputs probabilities (activation none); old parity took a softmax of them again
    ("classification", {"activation": "none", "threshold": None, "mask_resize": "none"},
     np.array([[0.9, 0.1]], np.float32), np.array([[0.6, 0.4]], np.float32), "prob_abs_diff_max", 0.3),
])
def test_parity_uses_the_models_postprocessing_block(task, post, ref, out, metric, expected):
    from pocus_edge.export.parity import compare

    assert compare(task, ref, out, post)[metric] == pytest.approx(expected, abs=1e-6)


def test_parity_masks_use_the_blocks_threshold():
    from pocus_edge.export.parity import compare

    post = {"activation": "sigmoid", "threshold": 0.7, "mask_resize": "bilinear_probabilities"}
    ref, out = np.full((1, 1, 4, 4), 0.5, np.float32), np.full((1, 1, 4, 4), 1.0, np.float32)  # p 0.62 vs 0.73
    assert compare("segmentation", ref, out, post)["dice_mean"] == 0.0  # empty vs full at the model's 0.7
    assert compare("segmentation", ref, out, {**post, "threshold": 0.5})["dice_mean"] == 1.0


# --- QAT evaluates as the card says (normalisation, threshold) ---------------------------------------------------

class FirstChannel(nn.Module):
    """Logits = the first input channel as the model receives it (normalised), times `gain`."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.gain


def _samples(tmp_path, gray: int):
    """Two uniform frames of `gray` (0..255) whose masks are all foreground."""
    from pocus_edge.finetune.data import Sample

    samples = []
    for i in range(2):
        image, mask = tmp_path / f"im{i}.png", tmp_path / f"mask{i}.png"
        Image.fromarray(np.full((24, 24), gray, np.uint8)).save(image)
        Image.fromarray(np.full((24, 24), 255, np.uint8)).save(mask)
        samples.append(Sample(str(image), str(mask), None, f"g{i}"))
    return samples


@pytest.mark.parametrize("card, gray, gain, dice", [
    # threshold: logit 0 -> p 0.5: below the card's 0.6, so no foreground (old: 0.5 -> all foreground, Dice 1)
    ({"threshold": 0.6}, 128, 0.0, 0.0),
    # normalisation: mean 0.5 / std 1 gives (0.49 - 0.5) < 0 -> background (old, ImageNet: (0.49-0.485)/0.229 > 0)
    ({"threshold": 0.5, "normalization": {"mean": [0.5] * 3, "std": [1.0] * 3}}, 125, 100.0, 0.0),
    ({"threshold": 0.5}, 125, 100.0, 1.0),  # the same frames under the card's ImageNet constants: foreground
])
def test_qat_evaluates_with_the_cards_normalisation_and_threshold(tmp_path, card, gray, gain, dice):
    from pocus_edge.finetune.qat import card_evaluation, evaluate

    full = {"task": "segmentation", "labels": ["background", "lesion"], "input_size": [SIZE, SIZE], **card}
    evaluation = card_evaluation(full, tmp_path / "model.safetensors")
    summary = evaluate(evaluation, FirstChannel(gain), _samples(tmp_path, gray))
    assert summary["dice"] == pytest.approx(dice)


def test_qat_refuses_a_segmentation_card_without_a_threshold(tmp_path):
    from pocus_edge.errors import CheckpointError
    from pocus_edge.finetune.qat import card_evaluation

    with pytest.raises(CheckpointError, match="threshold"):  # old: evaluated at 0.5 whatever the card said
        card_evaluation({"task": "segmentation", "labels": ["background", "lesion"], "input_size": [SIZE, SIZE]},
                        tmp_path / "model.safetensors")


# --- progress: stages with item counts; --quiet draws nothing ----------------------------------------------------

def test_stage_with_items_shows_a_bar_with_its_count_and_quiet_shows_nothing(capsys):
    from pocus_edge.export.progress import ExportProgress

    shown = ExportProgress("export tflite int8", enabled=True)
    shown.stage("convert")
    shown.stage("calibrate on 5 frames", items=5)
    for _ in shown.each(range(5)):
        pass
    shown.stage("mixed-precision search", items=9)
    shown.advance(3)  # met the target after 3 of at most 9 tries
    shown.close()
    err = capsys.readouterr().err
    assert "export tflite int8: calibrate on 5 frames" in err and "5/5" in err
    assert "3/3" in err and "3/9" not in err  # a stage that ends early shows what it did, not its limit
    assert shown.names == ["convert", "calibrate on 5 frames", "mixed-precision search"]
    quiet = ExportProgress("export", enabled=False)
    quiet.stage("calibrate on 5 frames", items=5)
    quiet.advance(5)
    quiet.close()
    assert capsys.readouterr().err == ""


@pytest.fixture
def recorded(monkeypatch):
    """Every ExportProgress stage begun (name, items) and the items advanced in each."""
    from pocus_edge.export import progress

    seen: list[list] = []
    real_stage, real_begin, real_advance = (progress.ExportProgress.stage, progress.ExportProgress.begin,
                                            progress.ExportProgress.advance)

    def begin(self, name):
        seen.append([name, None, 0])
        real_begin(self, name)

    def stage(self, name, items=None):
        real_stage(self, name, items)
        seen[-1][1] = items

    def advance(self, n=1):
        seen[-1][2] += n
        real_advance(self, n)

    monkeypatch.setattr(progress.ExportProgress, "begin", begin)
    monkeypatch.setattr(progress.ExportProgress, "stage", stage)
    monkeypatch.setattr(progress.ExportProgress, "advance", advance)
    return seen


def test_int8_export_reports_its_stages_with_item_counts_and_quiet_draws_none(tmp_path, monkeypatch, phantom_dir,
                                                                              recorded, capfd):
    pytest.importorskip("onnxruntime")
    from pocus_edge.cli import _run, app

    _use_tiny(monkeypatch, TinySegmenter())
    _run(app, ["export", "tiny", "-t", "onnx", "-p", "int8", "--image-size", str(SIZE), "--calib-data",
               str(phantom_dir), "--num-calib", "10", "--parity-data", "phantoms", "--num-parity", "8",
               "--parity-threshold", "dice_mean=0", "--parity-threshold", "dice_min=0",
               "--parity-threshold", "prob_abs_diff_mean=1", "--out", str(tmp_path / "b"), "--quiet"])
    printed, errors = capfd.readouterr()
    assert "export onnx int8" not in errors and "frames" not in errors  # --quiet: no stage lines, no bars
    stages = {name: (items, done) for name, items, done in recorded}
    names = [name for name, _, _ in recorded]
    calibrate = "calibrate on 10 frames"
    assert stages[calibrate] == (10, 10)  # old: one spinner for calibration + conversion + search, no count
    search = next(n for n in names if n.startswith("score full int8 on "))  # met the relaxed target: no tries
    assert not any(n.startswith("mixed-precision search") for n in names)
    parity = next(n for n in names if n.startswith("parity on "))
    assert stages[parity][0] == stages[parity][1] == int(parity.split()[2]) > 0  # one item per frame
    assert names.index("convert") < names.index(calibrate) < names.index(search) < names.index("write int8 model") \
        < names.index(parity)
    assert names[-2:] == ["self-test reference vectors", "write bundle"]


def test_search_advances_one_item_per_try():
    from pocus_edge.export.progress import ExportProgress
    from pocus_edge.export.quantize_mixed import _search

    class Job:  # agreement per float-layer set: a helps, b does not, c meets the target
        primary, layers, eval_frames = "dice_mean", ["a", "b", "c", "d"], [0, 1]
        thresholds = {"dice_mean": ["min", 0.95]}
        progress = ExportProgress.silent()
        table = {(): 0.9, ("a",): 0.93, ("a", "b"): 0.92, ("a", "c"): 0.96}

        def full(self, method):
            return ()

        def mixed(self, method, floats):
            return tuple(floats)

        def score(self, model, count=None):
            return {"dice_mean": self.table.get(model, 0.5), "output_sqnr_db": 20.0}

        def passes(self, metrics):
            return metrics["dice_mean"] >= 0.95

    job = Job()
    floats, _ = _search(job, "minmax", {"limit": 3}, {"layers": [{"layer": n} for n in Job.layers]})
    assert floats == ["a", "c"]
    task = job.progress.progress.tasks[-1]
    assert job.progress.names == ["score full int8 on 2 search frames", "mixed-precision search (up to 4 tries)"]
    assert task.completed == 3  # a, b, c tried; c met the target


# --- Core ML int8: our warning for channels whose weights quantise with a zero scale ------------------------------

def test_coreml_int8_warns_about_zero_scale_channels_by_layer(tmp_path, monkeypatch, phantom_dir, caplog):
    pytest.importorskip("coremltools", reason="Core ML conversion needs coremltools (pip install 'pocus-edge[export]')")
    from pocus_edge.export import export

    _use_tiny(monkeypatch, TinySegmenter(dead_channel=5))
    caplog.set_level(logging.WARNING)
    export("tiny", "coreml", "int8", tmp_path / "b", image_size=SIZE)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pocus_edge")]
    warning = next(m for m in ours if "zero" in m)  # old: numpy's "invalid value encountered in divide" only
    assert "body (1 of 32 output channels: 5)" in warning and "stem" not in warning
    assert "prune" in warning or "fp16" in warning  # says what to do


def test_coreml_int8_without_dead_channels_has_no_zero_scale_warning(tmp_path, monkeypatch, caplog):
    pytest.importorskip("coremltools", reason="Core ML conversion needs coremltools (pip install 'pocus-edge[export]')")
    from pocus_edge.export.coreml import zero_scale_channels

    assert zero_scale_channels(TinySegmenter()) == {}
    assert zero_scale_channels(TinySegmenter(dead_channel=5)) == {"body": [5]}


# --- quiet by default: litert-torch's root-logger lines stay hidden during conversion ------------------------------

def test_library_lines_on_the_root_logger_are_hidden_during_tflite_conversion(caplog):
    from pocus_edge.export.tflite import hidden_library_stdout

    caplog.set_level(logging.INFO)
    with hidden_library_stdout():
        logging.info("Use JAX lowering: aten.permute")  # what litert-torch does (old: shown without --verbose)
        logging.getLogger("pocus_edge.export").info("ours")
    with hidden_library_stdout(hide=False):  # --verbose
        logging.info("Use JAX lowering: aten.relu")
    assert [r.getMessage() for r in caplog.records] == ["ours", "Use JAX lowering: aten.relu"]
