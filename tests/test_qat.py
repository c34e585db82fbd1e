"""`pocus qat`: a short PT2E quantization-aware fine-tune of a trained checkpoint (pocus_edge/finetune/qat.py).

A tiny run on phantoms (64 px U-Net-ResNet18, a few steps; `--quiet` prints nothing) writes a checkpoint whose
card says qat, which pocus-export turns into an int8 ONNX bundle with its agreement in parity.json, and a
before/after table. The
BatchNorm fold QAT trains through is exact, and writing the trained folded weights back into the checkpoint's
own architecture gives the same float model (the "own float model" int8 is compared with).
"""

from __future__ import annotations

import json

import pytest
import torch

from pocus_edge.errors import CheckpointError, ConfigError, DataError

pytest.importorskip("torchao")
pytest.importorskip("litert_torch")
SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, phantom_dir):
    from pocus_edge.finetune.train import FinetuneConfig, run_finetune

    out = tmp_path_factory.mktemp("ft") / "run"
    run_finetune(FinetuneConfig(task="segmentation", data=str(phantom_dir), out=str(out), architecture="resnet18",
                                epochs=1, image_size=SIZE, batch_size=8, max_steps_per_epoch=2, threads=1))
    return out / "model.safetensors"


def test_qat_checkpoint_says_qat_and_exports_to_int8_onnx_with_agreement(checkpoint, phantom_dir, tmp_path,
                                                                         capfd, monkeypatch):
    from pocus_edge.cli import _run, app
    from pocus_edge.distill import progress
    from pocus_edge.export import export

    steps = []  # the bar a user sees without --quiet: one update per optimizer step (old: log lines only)
    monkeypatch.setattr(progress.TrainProgress, "update", lambda self, step, loss, ips, label=None:
                        steps.append((step, label)))
    out = tmp_path / "qat"
    _run(app, ["qat", str(checkpoint.parent), "--data", str(phantom_dir), "--out", str(out), "--epochs", "1",
               "--max-steps-per-epoch", "2", "--threads", "1", "--quiet"])
    printed, errors = capfd.readouterr()  # --quiet: no library chatter, at the file-descriptor level too
    assert printed == ""  # old: "Relu partition has more than one output node" x 8 (litert-torch's annotators print)
    assert not any(word in errors for word in ("partition has more than", "Warning:", "converted in training mode"))
    card = json.loads((out / "model.json").read_text())
    source = json.loads(checkpoint.with_suffix(".json").read_text())
    assert card["kind"] == "task_model" and card["qat"]["method"].startswith("PT2E QAT")
    assert card["qat"]["source_sha256"] == source["weights_sha256"] != card["weights_sha256"]
    assert card["qat"]["export_ranges"].startswith("recalibrated") and card["qat"]["seed"] == 0
    assert (card["encoder"], card["decoder_channels"], card["labels"]) == (
        source["encoder"], source["decoder_channels"], source["labels"])
    metrics = json.loads((out / "metrics.json").read_text())
    for when in ("before", "after"):
        row = metrics["test"][when]
        assert 0 <= row["int8_agreement_dice_mean"] <= 1 and {"float", "int8_simulated"} <= set(row)
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]  # epoch 0: the fake-quantised start, no step
    assert metrics["allocator"].startswith(("glibc: mmap threshold", "unchanged: "))
    assert metrics["kept_epoch"] in (0, 1) and f"Kept: epoch {metrics['kept_epoch']} of 1" in (out / "qat_report.md"
                                                                                            ).read_text()
    assert [s for s, _ in steps] == [1, 2] and steps[0][1].startswith("qat epoch 1/1 (val dice")
    report = (out / "qat_report.md").read_text()
    assert "| before QAT |" in report and "| after QAT |" in report
    manifest = export(str(out / "model.safetensors"), "onnx", "int8", tmp_path / "bundle", calib_data=phantom_dir,
                      parity_thresholds={"dice_mean": 0.0, "dice_min": 0.0, "prob_abs_diff_mean": 1.0})
    assert manifest["source"]["sha256"] == card["weights_sha256"]  # parity is against the QAT float model
    assert manifest["parity"]["status"] == "passed" and 0 < manifest["parity"]["metrics"]["dice_mean"] <= 1
    assert manifest["target_options"]["quantization"] == "static QDQ"


def test_an_epoch_worse_than_the_start_on_val_is_never_kept(checkpoint, phantom_dir, tmp_path, caplog,
                                                            monkeypatch):
    from safetensors.torch import load_file

    from pocus_edge.finetune import qat

    real, scores = qat.evaluate, iter([0.9, 0.5])  # validation: the start 0.9, epoch 1 worse (0.5)

    def evaluate(evaluation, model, samples):
        score = next(scores, None)
        return {"dice": score, "macro_f1": score} if score is not None else real(evaluation, model, samples)

    monkeypatch.setattr(qat, "evaluate", evaluate)
    summary = qat.run_qat(qat.QATConfig(checkpoint=str(checkpoint), data=str(phantom_dir), out=str(tmp_path / "o"),
                                        epochs=1, lr=1e-2, max_steps_per_epoch=2, threads=1))
    assert [h["val_dice_fake_quant"] for h in summary["history"]] == [0.9, 0.5]
    assert summary["kept_epoch"] == 0 and "keeps the starting weights" in caplog.text  # old: epoch 1, always
    saved = load_file(str(tmp_path / "o" / "model.safetensors"))
    card, cfg = json.loads(checkpoint.with_suffix(".json").read_text()), qat.QATConfig(str(checkpoint), "d", "o")
    folded, pairs = qat.fold_batchnorm(qat._load(cfg, "segmentation", card)[0].net.eval(),
                                       torch.rand(2, 3, SIZE, SIZE))
    start = qat.unfold_into(qat._load(cfg, "segmentation", card)[0].net, folded.state_dict(), pairs).state_dict()
    weights = [k for k in start if k.endswith("conv1.weight")]
    assert weights and all(torch.equal(saved[k], start[k]) for k in weights)  # the start's folded weights


def test_the_kept_epoch_is_the_best_on_val_and_the_earliest_on_a_tie():
    from pocus_edge.finetune.qat import kept_epoch

    history = [{"epoch": e, "val_dice_fake_quant": v} for e, v in enumerate([0.90, 0.92, 0.95, 0.95])]
    assert kept_epoch(history) == 2
    assert kept_epoch(history[:2]) == 1 and kept_epoch([history[0], {"epoch": 1, "val_dice_fake_quant": 0.9}]) == 0


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small_100"])  # timm BatchNormAct2d: norm + activation
def test_batchnorm_fold_and_write_back_are_exact(arch):
    from pocus_edge.finetune.qat import fold_batchnorm, unfold_into
    from pocus_edge.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("segmentation", arch, 1, None).eval()
    with torch.no_grad():  # BatchNorm statistics far from the identity, so a wrong fold shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.3, 3)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    x = torch.rand(2, 3, SIZE, SIZE)
    folded, pairs = fold_batchnorm(net, x)
    assert len(pairs) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        folded.get_submodule(pairs[0][0]).weight.mul_(1.1)  # "training" changed the folded weights
        back = unfold_into(create_model("segmentation", arch, 1, None), folded.state_dict(), pairs)
        assert torch.allclose(back(x), folded(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(back(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("change,error,message", [
    ({"data": "missing-folder"}, DataError, r"--data .*missing-folder: no such folder"),
    ({"epochs": 0}, ConfigError, r"--epochs"),
    ({"lr": 0.0}, ConfigError, r"--lr"),
    ({"seed": 1}, ConfigError, r"--split-seed 1: \d+ of --data .* fall in another split than in the fine-tune's .*"
                               r"splits.csv .*pass the fine-tune's --split-seed"),  # old: trained on its test images
])
def test_bad_options_are_refused_before_anything_is_written(change, error, message, checkpoint, phantom_dir,
                                                            tmp_path):
    from pocus_edge.finetune.qat import QATConfig, run_qat

    options = {"checkpoint": str(checkpoint), "data": str(phantom_dir), "out": str(tmp_path / "o"), **change}
    if change.get("data"):
        options["data"] = str(tmp_path / change["data"])
    with pytest.raises(error, match=message):
        run_qat(QATConfig(**options))
    assert not (tmp_path / "o").exists()


def test_the_split_seed_is_the_fine_tunes_split_seed_not_its_training_seed(tmp_path):
    from pocus_edge.finetune.qat import QATConfig, _seed

    (tmp_path / "config.yaml").write_text("seed: 3\nsplit_seed: 0\n")  # pocus finetune --seed 3 --split-seed 0
    cfg = QATConfig(checkpoint=str(tmp_path / "model.safetensors"), data="d", out="o")
    assert _seed(cfg) == 0  # old: 3, another split (QAT trained on the fine-tune's test images)
    (tmp_path / "config.yaml").write_text("seed: 3\nsplit_seed: null\n")  # no split seed: the fine-tune used --seed
    assert _seed(cfg) == 3


def test_an_unreadable_splits_csv_is_a_clear_error(checkpoint, phantom_dir, tmp_path):
    import shutil

    from pocus_edge.finetune.qat import QATConfig, run_qat

    run = shutil.copytree(checkpoint.parent, tmp_path / "run")
    (run / "splits.csv").write_text("file,part\nx.png,test\n")  # not the columns pocus finetune writes
    with pytest.raises(CheckpointError, match=r"splits.csv: not a readable pocus finetune splits.csv .*restore"):
        run_qat(QATConfig(checkpoint=str(run / "model.safetensors"), data=str(phantom_dir), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_a_distilled_encoder_is_not_a_qat_checkpoint(tmp_path, phantom_dir):
    from pocus_edge.finetune.qat import QATConfig, run_qat
    from pocus_edge.models.encoder_io import save_encoder

    encoder = torch.nn.Conv2d(3, 4, 3)
    save_encoder(tmp_path / "student.safetensors", encoder, "resnet18", SIZE, {})
    with pytest.raises(CheckpointError, match=r"not a pocus finetune checkpoint \(card kind 'encoder'\)"):
        run_qat(QATConfig(checkpoint=str(tmp_path / "student.safetensors"), data=str(phantom_dir),
                          out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
