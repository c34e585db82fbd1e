"""One home for post-processing (runtime/postprocess.py), the PyTorch frame runner (models/inference.py), Dice,
the normalisation constants and the split group columns: hand-computed values, and every consumer on the one rule."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pocus_edge.errors import ConfigError
from pocus_edge.runtime.postprocess import (
    BINARY_MASK_VALUES,
    CLASS_MASK_VALUES,
    activate,
    dice,
    mask_dice,
    mask_png,
    mask_values,
    postprocessing_for,
    segment,
    segmentation_classes,
    to_mask,
)
from pocus_edge.runtime.preprocess import resize_bilinear

BINARY = {"activation": "sigmoid", "threshold": 0.5, "mask_resize": "bilinear_probabilities"}


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _folder(root: Path, masks: list[np.ndarray], labels: list[str] | None = None) -> Path:
    """images/ + masks/ + manifest.csv with one 8x8 frame per mask (image content does not matter here)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i, m in enumerate(masks):
        Image.fromarray(np.full((8, 8), 40 + i, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(root / "masks" / f"{i}.png")
        rows.append({"file": f"images/{i}.png", "mask": f"masks/{i}.png", "label": (labels or ["x"] * 99)[i],
                     "case_id": str(i)})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


# --- the numpy rules, hand-computed ------------------------------------------------------------------------------

def test_activations_by_name_and_channel_axis():
    x = np.array([[0.0, 2.0], [0.0, 0.0]], np.float32)  # 2 channels x 2 values (axis 0) / 2 samples (axis 1)
    assert activate(x, "sigmoid") == pytest.approx(np.array([[0.5, 1 / (1 + np.exp(-2))], [0.5, 0.5]]))
    assert activate(x, "softmax", axis=0)[:, 1] == pytest.approx([np.exp(2) / (np.exp(2) + 1), 1 / (np.exp(2) + 1)])
    assert activate(x, "softmax", axis=1)[0] == pytest.approx([1 / (1 + np.exp(2)), np.exp(2) / (1 + np.exp(2))])
    probs = np.array([0.2, 0.8], np.float32)  # a Core ML classifier already ends in a softmax: left as it is
    assert activate(probs, "none").tolist() == pytest.approx([0.2, 0.8])
    assert activate(np.array([-1000.0, 1000.0]), "sigmoid").tolist() == [0.0, 1.0]  # no overflow warning/NaN


def test_mask_uses_the_models_threshold_or_argmax():
    probs = np.array([[[0.55, 0.65], [0.75, 0.95]]], np.float32)
    assert to_mask(probs, 0.7).tolist() == [[0, 0], [1, 1]]
    assert to_mask(probs, 0.5).tolist() == [[1, 1], [1, 1]]
    three = np.array([[[0.1]], [[0.7]], [[0.2]]], np.float32)
    assert to_mask(three, None).tolist() == [[1]]  # multi-class needs no threshold
    batch = np.stack([probs, probs])  # N x 1 x H x W: channels on axis 1 (what parity compares)
    assert to_mask(batch, 0.7, axis=1).tolist() == [[[0, 0], [1, 1]]] * 2


@pytest.mark.parametrize("threshold", [None, 1.5, -0.1, True])
def test_one_channel_mask_without_a_valid_threshold_is_refused(threshold):
    with pytest.raises(ConfigError, match=r"^postprocessing threshold .*needs a probability threshold in \[0, 1\]"):
        to_mask(np.full((1, 2, 2), 0.9, np.float32), threshold)


def test_segment_resizes_probabilities_then_thresholds():
    logits = np.array([[[-3.0, 3.0], [0.2, -0.2]]], np.float32)
    probs, mask = segment(logits, {**BINARY, "threshold": 0.6}, (4, 6))
    expected = resize_bilinear(1 / (1 + np.exp(-logits.astype(np.float64))), 4, 6)
    assert probs.shape == (1, 4, 6) and np.allclose(probs, expected, atol=1e-6)
    assert mask.dtype == np.uint8 and np.array_equal(mask, (expected[0] >= 0.6).astype(np.uint8))
    same, _ = segment(logits, {**BINARY, "mask_resize": "none"}, (4, 6))
    assert same.shape == (1, 2, 2)


def test_mask_png_values_follow_the_channel_count():
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    assert mask_png(mask.clip(0, 1), 1).tolist() == [[0, 255], [255, 255]]
    assert mask_png(mask, 3).tolist() == [[0, 1], [2, 1]]
    assert (mask_values(1), mask_values(3)) == (BINARY_MASK_VALUES, CLASS_MASK_VALUES)
    nchw = {"outputs": [{"shape": [1, 3, 8, 8], "layout": "NCHW"}]}
    nhwc = {"outputs": [{"shape": [1, 8, 8, 1], "layout": "NHWC"}]}
    assert (segmentation_classes(nchw), segmentation_classes(nhwc)) == (3, 1)


def test_predict_report_describes_the_mask_it_writes():
    """A sigmoid model with 2 output channels writes class-index PNGs; results.json used to say 0/255."""
    from pocus_edge.runtime.predict import _mask_values

    manifest = {"postprocessing": {"activation": "sigmoid"}, "outputs": [{"shape": [1, 2, 8, 8], "layout": "NCHW"}]}
    assert _mask_values(SimpleNamespace(task="segmentation", manifest=manifest)) == CLASS_MASK_VALUES


def test_one_dice_everywhere():
    from pocus_edge.finetune.metrics import dice_score

    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    assert dice(a, b) == 0.5 and dice(a, a) == 1.0
    assert dice(np.zeros(4), np.zeros(4)) == 1.0 and dice(a, np.zeros_like(a)) == 0.0
    assert dice_score is dice
    m1, m2 = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    assert mask_dice(m1, m2, 3) == pytest.approx((2 / 3 + 2 / 3) / 2)  # mean over foreground classes 1 and 2
    assert mask_dice(m1 > 0, m2 > 0, 1) == 1.0


def test_postprocessing_block_from_a_card():
    assert postprocessing_for("segmentation", ["background", "lesion"], 0.7) == {**BINARY, "threshold": 0.7}
    assert postprocessing_for("segmentation", ["bg", "a", "b"], None)["activation"] == "softmax"
    assert postprocessing_for("classification", ["a", "b"], None) == {"activation": "softmax", "threshold": None,
                                                                      "mask_resize": "none"}


def test_parity_uses_the_given_threshold_and_refuses_none():
    from pocus_edge.export.parity import compare

    ref = np.full((2, 1, 4, 4), _logit(0.6), np.float32)
    out = ref.copy()
    out[1] = _logit(0.4)
    post = postprocessing_for("segmentation", ["background", "lesion"], 0.5)  # the block parity takes (export M)
    assert compare("segmentation", ref, out, post)["dice_mean"] == 0.5  # frame 1: full mask vs empty
    assert compare("segmentation", ref, out, {**post, "threshold": 0.7})["dice_mean"] == 1.0  # both empty at 0.7
    with pytest.raises(ConfigError, match="postprocessing threshold None"):
        compare("segmentation", ref, out, {**post, "threshold": None})


# --- evaluation reads the model's post-processing ---------------------------------------------------------------

def test_eval_uses_the_manifest_threshold(tmp_path):
    from pocus_edge.finetune.data import read_samples
    from pocus_edge.finetune.evaluate import evaluate_outputs

    empty = np.zeros((8, 8), np.uint8)
    samples = read_samples(_folder(tmp_path / "d", [empty, empty]), "segmentation")

    def predict(grays):  # probability 0.6 everywhere: foreground at 0.5, background at the model's 0.7
        return np.full((len(grays), 1, 4, 4), _logit(0.6), np.float32)

    at_07 = evaluate_outputs("segmentation", samples, ["background", "lesion"], predict,
                             post={**BINARY, "threshold": 0.7})["summary"]
    at_05 = evaluate_outputs("segmentation", samples, ["background", "lesion"], predict)["summary"]
    assert (at_07["dice"], at_05["dice"]) == (1.0, 0.0)


def test_eval_of_a_multiclass_model_takes_the_argmax(tmp_path):
    """A softmax model whose background channel wins everywhere predicts nothing (sigmoid of channel 0 said all)."""
    from pocus_edge.finetune.data import read_samples
    from pocus_edge.finetune.evaluate import evaluate_outputs

    truth = np.zeros((8, 8), np.uint8)
    samples = read_samples(_folder(tmp_path / "d", [truth]), "segmentation")
    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[:, 0] = 4.0
    post = postprocessing_for("segmentation", ["background", "head", "abdomen"], None)
    rows = evaluate_outputs("segmentation", samples, ["background", "head", "abdomen"], lambda g: logits,
                            post=post)["per_image"]
    assert rows[0]["dice"] == 1.0 and rows[0]["iou"] == 1.0


def test_eval_of_a_probability_output_is_not_softmaxed_twice(tmp_path):
    from pocus_edge.finetune.data import read_samples
    from pocus_edge.finetune.evaluate import evaluate_outputs

    samples = read_samples(_folder(tmp_path / "d", [np.zeros((8, 8))] * 2, ["a", "b"]), "classification")
    probs = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)
    post = {"activation": "none", "threshold": None, "mask_resize": "none"}  # a Core ML classifier bundle
    rows = evaluate_outputs("classification", samples, ["a", "b"], lambda g: probs, post=post)["per_image"]
    assert [r["confidence"] for r in rows] == pytest.approx([0.9, 0.7])
    assert [r["predicted"] for r in rows] == ["a", "b"]


def test_eval_of_a_checkpoint_reads_the_card_threshold(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import pocus_edge.export.source as source
    from pocus_edge.finetune.eval_cli import run_eval
    from pocus_edge.models.tasks import TaskSpec

    empty = np.zeros((8, 8), np.uint8)
    data = _folder(tmp_path / "d", [empty] * 20)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)).eval()
    with torch.no_grad():  # a constant output: probability 0.6 on every pixel
        net[0].weight.zero_()
        net[0].bias.fill_(_logit(0.6))
    spec = TaskSpec(name="m", task="segmentation", encoder="tiny", labels=["background", "lesion"], image_size=8,
                    threshold=0.7, source="card")
    monkeypatch.setattr(source, "resolve_model", lambda model, size: (net, spec))
    assert run_eval(tmp_path / "model.safetensors", data, "all", 0, 1, None)["metrics"]["dice"] == 1.0
    spec.threshold = 0.5
    assert run_eval(tmp_path / "model.safetensors", data, "all", 0, 1, None)["metrics"]["dice"] == 0.0


# --- the PyTorch frame runner -----------------------------------------------------------------------------------

def test_frame_outputs_normalises_batches_and_restores_the_mode():
    torch = pytest.importorskip("torch")
    from pocus_edge.models.inference import frame_outputs
    from pocus_edge.runtime.preprocess import normalization, normalized_chw

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.BatchNorm2d(2))
    net.train()
    rng = np.random.default_rng(0)
    grays = [rng.random((10, 12)).astype(np.float32) for _ in range(5)]
    pre = {**normalization(8), "raw_input": True}  # the torch model always takes the normalised input
    out = frame_outputs(net, grays, pre, batch_size=2)
    assert net.training and out.dtype == np.float32 and out.shape == (5, 2, 8, 8)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([normalized_chw(g, normalization(8)) for g in grays]))
        expected = net.eval()(x).numpy()
    assert np.allclose(out, expected, atol=1e-5)


# --- one definition of constants and group columns ---------------------------------------------------------------

def test_normalisation_constants_have_one_home_the_runtime_can_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from pocus_edge.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD\n"
            "import pocus_edge.runtime.postprocess\n"
            "print(IMAGENET_MEAN, IMAGENET_STD)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(0.485, 0.456, 0.406) (0.229, 0.224, 0.225)"
    pytest.importorskip("torch")
    import pocus_edge.data.transforms as transforms
    import pocus_edge.models.tasks as tasks
    import pocus_edge.runtime.preprocess as preprocess

    assert transforms.IMAGENET_MEAN is preprocess.IMAGENET_MEAN and transforms.IMAGENET_STD is preprocess.IMAGENET_STD
    assert tasks.TaskSpec.__dataclass_fields__["mean"].default is preprocess.IMAGENET_MEAN


def test_corpus_and_finetune_group_a_row_by_the_same_column(tmp_path):
    """clip_id before source_file in both (the corpus used to take source_file first)."""
    from pocus_edge.data.corpus import scan_corpus
    from pocus_edge.finetune.data import read_samples

    root = tmp_path / "clips"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(4):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"file": f"images/{i}.png", "label": "a" if i < 2 else "b", "source_file": f"video{i}.mp4",
                     "clip_id": f"clip{i // 2}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    corpus_groups = [ref.group for ref in scan_corpus([root]).frames]
    finetune_groups = [s.group for s in read_samples(root, "classification")]
    assert finetune_groups == ["clip0", "clip0", "clip1", "clip1"]
    assert corpus_groups == [f"clips:{g}" for g in finetune_groups]
