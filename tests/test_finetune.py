"""Downstream fine-tuning: metrics on hand-made masks, leak-free splits, a tiny run, export round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocus_edge.errors import DataError
from pocus_edge.finetune.data import Sample, label_fraction, mask_label, read_samples, split_samples
from pocus_edge.finetune.metrics import accuracy, confusion_matrix, dice_score, hd95, iou_score, macro_f1


def test_dice_iou_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :2] = True  # 2 px
    b[0, 1:4] = True  # 3 px, 1 shared
    assert dice_score(a, b) == pytest.approx(2 * 1 / 5)
    assert iou_score(a, b) == pytest.approx(1 / 4)
    empty = np.zeros((4, 4), bool)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0  # both empty: correct "no lesion"
    assert dice_score(a, empty) == 0.0 and iou_score(empty, a) == 0.0


def test_hd95_against_known_shift():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)  # the same square shifted 3 px
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=0.5) == pytest.approx(1.5)
    assert np.isnan(hd95(a, np.zeros_like(a)))


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.metrics import confusion_matrix as sk_cm

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 50).tolist()
    pred = rng.integers(0, 3, 50).tolist()
    assert accuracy(truth, pred) == pytest.approx(accuracy_score(truth, pred))
    assert macro_f1(truth, pred, 3) == pytest.approx(f1_score(truth, pred, average="macro"))
    assert (confusion_matrix(truth, pred, 3) == sk_cm(truth, pred, labels=[0, 1, 2])).all()


def _samples(n_groups: int, per_group: int, labels=("a", "b")) -> list[Sample]:
    return [Sample(f"img{g}_{i}.png", None, labels[g % len(labels)], f"case{g}") for g in range(n_groups)
            for i in range(per_group)]


def test_splits_are_deterministic_grouped_and_stratified():
    samples = _samples(60, 3)
    s1 = split_samples(samples, seed=0, stratify=True)
    s2 = split_samples(samples, seed=0, stratify=True)
    assert {k: [s.image for s in v] for k, v in s1.items()} == {k: [s.image for s in v] for k, v in s2.items()}
    groups = {k: {s.group for s in v} for k, v in s1.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    for name in ("train", "val", "test"):
        assert {s.label for s in s1[name]} == {"a", "b"}
    small = label_fraction(s1["train"], 0.2, seed=0, stratify=True)
    half = label_fraction(s1["train"], 0.5, seed=0, stratify=True)
    assert {s.image for s in small} <= {s.image for s in half} <= {s.image for s in s1["train"]}
    assert {s.label for s in small} == {"a", "b"}


def test_the_mask_is_named_by_a_label_only_when_every_image_shares_it():
    head = [Sample(f"hc{i}.png", f"m{i}.png", "fetal_head", f"c{i}") for i in range(3)]
    assert mask_label(head) == "fetal_head"  # HC18: the label column names the structure
    busi = [Sample(f"b{i}.png", f"m{i}.png", label, f"c{i}") for i, label in enumerate(["normal", "benign"])]
    assert mask_label(busi) == "foreground"  # BUSI: image classes; old: the first row's "normal" named the lesion mask
    assert mask_label([Sample("x.png", "m.png", None, "c")]) == "foreground"


def test_bad_data_gives_clear_errors(tmp_path, phantom_dir):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(phantom_dir, data)
    mask = sorted((data / "masks").glob("*.png"))[0]
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    samples = read_samples(data, "segmentation")
    from pocus_edge.finetune.data import load_pair

    bad = next(s for s in samples if s.mask == str(mask))
    with pytest.raises(DataError, match="mask is 10x10"):
        load_pair(bad)
    mask.unlink()
    with pytest.raises(DataError, match="does not exist"):
        read_samples(data, "segmentation")
    one = tmp_path / "one"
    (one / "benign").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(one / "benign" / "x.png")
    with pytest.raises(DataError, match="at least two classes"):
        read_samples(one, "classification")


def test_tiny_finetune_beats_chance_and_exports(tmp_path):
    """Phantom lesions are learnable: a short U-Net run must reach a Dice far above an empty/constant mask."""
    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.export import export
    from pocus_edge.finetune.train import FinetuneConfig, run_finetune

    data = write_phantom_dataset(tmp_path / "ph", 90, size=(64, 64), seed=3)
    cfg = FinetuneConfig(task="segmentation", data=str(data), out=str(tmp_path / "run"), architecture="resnet18",
                         epochs=6, image_size=64, batch_size=4, lr=2e-3, threads=1)  # test Dice 0.60, chance 0.15
    summary = run_finetune(cfg)
    # chance: predicting "no lesion" everywhere scores 1 on lesion-free images and 0 elsewhere
    from pocus_edge.finetune.data import load_pair

    test_rows = [r for r in (tmp_path / "run" / "splits.csv").read_text().splitlines()[1:] if ",test," in r]
    masks = [load_pair(s)[1] for s in read_samples(data, "segmentation") if any(r.startswith(s.image + ",")
                                                                                for r in test_rows)]
    chance = float(np.mean([m.sum() == 0 for m in masks]))
    assert summary["test"]["dice"] > chance + 0.25, (summary["test"], chance)
    assert summary["allocator"].startswith(("glibc: mmap threshold", "unchanged: "))
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.safetensors", "model.json", "metrics.json", "per_image.csv", "splits.csv", "config.yaml"} <= files
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["kind"] == "task_model" and card["task"] == "segmentation"
    assert card["labels"] == ["background", "foreground"]  # per-image classes (old: the first image's, e.g. "normal")
    manifest = export(str(tmp_path / "run" / "model.safetensors"), "onnx", "fp32", tmp_path / "bundle",
                      parity_data=data)
    assert manifest["parity"]["status"] == "passed" and manifest["source"]["sha256"] == card["weights_sha256"]
    assert manifest["preprocessing"]["image_size"] == [64, 64]


def test_eval_sweep_and_embed_plot(tmp_path, phantom_dir, capsys):
    """eval on a checkpoint and on its bundle agree; a 2-cell sweep writes its table; embed-plot writes a PNG."""
    from conftest import pocus_here

    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.finetune.eval_cli import run_eval
    from pocus_edge.finetune.sweep import run_sweep

    data = write_phantom_dataset(tmp_path / "ph", 60, size=(64, 64), seed=5)
    result = run_sweep("segmentation", str(data), {"R18-Rand": "random"}, [0.5, 1.0], tmp_path / "sweep",
                       architecture="resnet18", epochs=1, image_size=64, batch_size=8, threads=1)
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| R18-Rand |" in table and "50 %" in table and "100 %" in table
    half = result["cells"]["R18-Rand"]["0.5"]["train_images"]
    assert 0 < half < result["cells"]["R18-Rand"]["1"]["train_images"]
    ckpt = tmp_path / "sweep" / "runs" / "R18-Rand-100pct" / "model.safetensors"
    import yaml

    # the suite exports the checkpoint (onnx fp32); the eval and bench-parity checks below run on that bundle
    suite = {"out": str(tmp_path / "suite"), "image_size": 64, "models": {"seg": str(ckpt)},
             "targets": {"onnx": ["fp32"]}, "parity_data": str(data), "references": {"seg": str(ckpt)}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    code, _, err = pocus_here(["bench", "suite", tmp_path / "suite.yaml", "--only", "parity"], capsys)
    assert code == 0, err[-2000:]
    report = (tmp_path / "suite" / "report.md").read_text()
    assert "| seg-onnx-fp32 | onnx | fp32 |" in report and "PyTorch fp32 ground truth" in report
    assert not (tmp_path / "suite" / "latency.json").exists()
    assert len(json.loads((tmp_path / "suite" / "parity.json").read_text())["rows"]) == 1
    bundle = tmp_path / "suite" / "bundles" / "seg-onnx-fp32"
    torch_eval = run_eval(ckpt, data, "test", 0, None, None)
    bundle_eval = run_eval(bundle, data, "test", 0, 1, tmp_path / "ev")
    assert bundle_eval["metrics"]["images"] == torch_eval["metrics"]["images"]
    assert abs(bundle_eval["metrics"]["dice"] - torch_eval["metrics"]["dice"]) < 0.01
    assert (tmp_path / "ev" / "eval.json").is_file()
    from pocus_edge.bench.parity import bench_parity

    row = bench_parity([bundle], ckpt, data)[0]
    assert row["agreement"]["dice_mean"] > 0.99 and abs(row["dice_change"]) < 0.01
    plot = tmp_path / "fig.png"
    code, _, err = pocus_here(["embed-plot", "--encoder", "random", "--data", data, "--data", phantom_dir,
                               "--per-dataset", "15", "--image-size", "64", "--out", plot], capsys)
    assert code == 0, err
    assert plot.stat().st_size > 10_000


def test_distilled_student_initialises_unet_and_classifier(tmp_path):
    """A `pocus distill` student file loads into the smp U-Net encoder and the classifier; a file that does not
    fit (a missing tensor) is refused with counts, not a traceback from inside smp."""
    import torch
    from safetensors.torch import save_file

    from pocus_edge.errors import CheckpointError
    from pocus_edge.finetune.model import build_finetune_model
    from pocus_edge.models.encoder_io import save_encoder
    from pocus_edge.models.student import build_student

    student = build_student("resnet18")
    path = tmp_path / "student.safetensors"
    save_encoder(path, student, "resnet18", 64, {"origin": "test"})
    for task, classes in (("segmentation", 1), ("classification", 3)):
        model, init = build_finetune_model(task, "resnet18", str(path), classes, linear_probe=False)
        assert torch.equal(model.encoder.layer4[1].conv2.weight, student.layer4[1].conv2.weight), task
        assert str(path) in init["origin"]
    state = {k: v for k, v in student.state_dict().items() if k != "layer4.1.conv2.weight"}
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    card = json.loads(path.with_suffix(".json").read_text())
    from pocus_edge.io import sha256_file

    broken.with_suffix(".json").write_text(json.dumps({**card, "weights_sha256": sha256_file(broken)}))
    with pytest.raises(CheckpointError, match="1 missing"):
        build_finetune_model("segmentation", "resnet18", str(broken), 1, linear_probe=False)
