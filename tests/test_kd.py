"""`pocus kd`: loss terms by hand, a frozen teacher, no test leak into the transfer set, clear errors, bit-exact
resume of stage 1, and a kd checkpoint that exports and runs in the torch-free runtime."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from pocus_edge.data.phantoms import write_phantom_dataset
from pocus_edge.errors import CheckpointError, ConfigError, DataError
from pocus_edge.kd.config import KDConfig
from pocus_edge.kd.losses import hidden_loss, kd_loss, output_loss
from pocus_edge.kd.method import TaskKD, held_out_digests
from pocus_edge.kd.run import run_kd
from pocus_edge.models.encoder_io import save_encoder
from pocus_edge.models.registry import create_model, default_decoder_channels
from pocus_edge.models.tasks import randomize_batchnorm


def test_hidden_and_output_losses_against_hand_computation():
    s = torch.tensor([[[[1.0, 3.0], [0.0, 2.0]]]])  # 1 x 1 x 2 x 2
    t = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert hidden_loss(s, t).item() == pytest.approx((1 + 4 + 0 + 4) / 4)
    # a 1x1 student map is resized (bilinear) to the teacher's 2x2 grid: every cell becomes 2
    assert hidden_loss(torch.full((1, 1, 1, 1), 2.0), t).item() == pytest.approx((4 + 1 + 4 + 4) / 4)
    assert output_loss(s, t).item() == pytest.approx(9 / 4)
    logits_s, logits_t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0 * 0.6931471805599453]])
    # KL(p_t || p_s) with p_t = (0.2, 0.8), p_s = (0.5, 0.5), T = 1
    expected = 0.2 * torch.log(torch.tensor(0.2 / 0.5)) + 0.8 * torch.log(torch.tensor(0.8 / 0.5))
    assert output_loss(logits_s, logits_t, temperature=1.0).item() == pytest.approx(float(expected), rel=1e-5)
    total = kd_loss((s, s), (t, t), output_weight=0.2, hidden_weight=0.1)
    assert total.item() == pytest.approx(0.2 * 9 / 4 + 0.1 * 9 / 4)
    assert kd_loss((s, s * 100), (t, t), output_weight=0.2, hidden_weight=0.0).item() == pytest.approx(0.2 * 9 / 4)
    with pytest.raises(ValueError, match="differ in batch or channels"):
        hidden_loss(torch.zeros(1, 2, 2, 2), t)


def _teacher(path, task="segmentation", arch="resnet18", num_classes=1, smoke=False, seed=0):
    torch.manual_seed(seed)
    net = randomize_batchnorm(create_model(task, arch, num_classes), seed=seed)
    save_encoder(path, net, arch, 64, {
        "kind": "task_model", "task": task, "encoder": arch, "num_classes": num_classes,
        "labels": ["background", "lesion"] if task == "segmentation" else [f"c{i}" for i in range(num_classes)],
        "threshold": 0.5 if task == "segmentation" else None, "smoke_test_only": smoke,
        "decoder_channels": list(default_decoder_channels(arch)) if task == "segmentation" else None})
    return path


@pytest.fixture(scope="module")
def kd_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    labeled = write_phantom_dataset(root / "labeled", 40, size=(64, 64), seed=5)
    transfer = write_phantom_dataset(root / "transfer", 24, size=(64, 64), seed=6)
    teacher = _teacher(root / "teacher.safetensors", smoke=True)
    return root, labeled, transfer, teacher


def _cfg(kd_setup, out, **overrides) -> KDConfig:
    root, labeled, transfer, teacher = kd_setup
    values = dict(task="segmentation", teacher_checkpoint=str(teacher), labeled_data=str(labeled),
                  data=[str(transfer), str(labeled)], out=str(out), student="mobilenetv3_small_100", image_size=64,
                  batch_size=8, max_steps=4, save_every="2", log_every=1, held_out_fraction=0.1, num_workers=0,
                  threads=1, quiet=True, finetune_epochs=1, finetune_batch_size=8, finetune_max_steps_per_epoch=2)
    values.update(overrides)
    return KDConfig(**values)


def test_a_transfer_list_limits_stage_one_to_the_listed_frames(kd_setup, tmp_path):
    from pocus_edge.data.frame_list import write_frame_list
    from pocus_edge.distill.ddp import init_distributed

    transfer = kd_setup[2]
    listed = sorted(str(p.resolve()) for p in (transfer / "images").glob("*.png"))[:10]
    write_frame_list(tmp_path / "list.txt", listed, ["hand-made list"])
    cfg = _cfg(kd_setup, tmp_path / "run", data=[str(transfer)], data_list=str(tmp_path / "list.txt"),
               held_out_fraction=0.0, batch_size=4).validate()
    data = TaskKD(cfg).prepare_data(cfg, init_distributed())
    assert sorted(str(Path(f.path).resolve()) for f in data.train) == listed
    assert data.unlisted > 0 and len(data.data_list_sha256) == 64


def test_teacher_stays_frozen_through_a_kd_step(kd_setup, tmp_path):
    cfg = _cfg(kd_setup, tmp_path / "run").validate()
    method = TaskKD(cfg)
    teacher, student = method.build_models(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    teacher.train()
    student.train()
    loss = method.loss(teacher, student, torch.randn(4, 3, 64, 64))
    loss.backward()
    optimizer.step()
    assert not teacher.net.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert student.projector.weight.grad is not None


def test_val_and_test_images_never_reach_the_transfer_set(kd_setup, tmp_path):
    root, labeled, transfer, _ = kd_setup
    digests = held_out_digests(str(labeled), "segmentation", seed=0)
    assert digests  # 40 images -> some in val/test
    leak = tmp_path / "leak"
    shutil.copytree(transfer / "images", leak / "images")  # no manifest.csv: every image file is read
    from pocus_edge.finetune.data import read_samples, split_samples

    test_image = split_samples(read_samples(labeled, "segmentation"), 0, False)["test"][0].image
    shutil.copy(test_image, leak / "images" / "renamed_copy.png")  # same pixels under another name
    cfg = _cfg(kd_setup, tmp_path / "run", data=[str(leak), str(labeled)]).validate()
    method = TaskKD(cfg)
    from pocus_edge.distill.ddp import init_distributed

    data = method.prepare_data(cfg, init_distributed())
    kept = {f.path for f in data.corpus.frames}
    assert str(leak / "images" / "renamed_copy.png") not in kept and test_image not in kept
    assert method.excluded == len(digests) + 1


def test_kd_end_to_end_exports_and_runs_in_the_runtime(kd_setup, tmp_path):
    import numpy as np

    import pocus_edge.runtime as rt
    from pocus_edge.export import export

    summary = run_kd(_cfg(kd_setup, tmp_path / "run"))
    run = tmp_path / "run"
    card = json.loads((run / "model.json").read_text())
    assert card["kind"] == "task_model" and card["encoder"] == "mobilenetv3_small_100"
    assert card["origin"] == "pocus kd" and card["teacher"]["teacher_sha256"]
    assert card["smoke_test_only"] is True  # the teacher was a smoke-test model: the flag survives both stages
    assert card["decoder_channels"] == list(default_decoder_channels("mobilenetv3_small_100"))
    assert summary["transfer"]["removed_labelled_val_test"] > 0
    assert summary["kd"]["steps"] == 4 and (run / "kd" / "metrics.jsonl").is_file()
    manifest = export(str(run / "model.safetensors"), "onnx", "fp32", tmp_path / "bundle", parity_data=kd_setup[1])
    assert manifest["parity"]["status"] == "passed"
    result = rt.load(tmp_path / "bundle")(np.full((64, 64), 128, np.uint8))
    assert result.mask.shape == (64, 64)


def test_stage_one_resume_is_bit_exact(kd_setup, tmp_path):
    from pocus_edge.distill.trainer import run_distillation
    from pocus_edge.models.encoder_io import load_encoder_state

    full = _cfg(kd_setup, tmp_path / "full").validate()
    run_distillation(full, TaskKD(full))
    part = _cfg(kd_setup, tmp_path / "part").validate()
    run_distillation(part, TaskKD(part))
    ckpts = tmp_path / "part" / "checkpoints"
    for name in ("step-00000004.pt", "step-00000004.pt.sha256"):
        (ckpts / name).unlink()  # as if killed after the step-2 checkpoint
    (tmp_path / "part" / "student.safetensors").unlink()
    resumed = dataclasses.replace(part, resume=True)
    run_distillation(resumed, TaskKD(resumed))
    a, _ = load_encoder_state(tmp_path / "full" / "student.safetensors")
    b, _ = load_encoder_state(tmp_path / "part" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = _teacher(tmp_path / "other.safetensors", seed=1)
    changed = dataclasses.replace(part, resume=True, teacher_checkpoint=str(other))
    with pytest.raises(ConfigError, match="teacher_sha256"):
        run_distillation(changed, TaskKD(changed))


def test_clear_errors(kd_setup, tmp_path):
    root, labeled, transfer, teacher = kd_setup
    student = tmp_path / "student.safetensors"
    save_encoder(student, create_model("embedding", "resnet18").encoder, "resnet18", 64, {"origin": "pocus distill"})
    with pytest.raises(CheckpointError, match="not a task model"):
        run_kd(_cfg(kd_setup, tmp_path / "a", teacher_checkpoint=str(student)))
    with pytest.raises(ConfigError, match="Did you mean 'mobilenetv3_small_100'"):
        run_kd(_cfg(kd_setup, tmp_path / "b", student="mobilenetv3_smal"))
    cls_teacher = _teacher(tmp_path / "cls.safetensors", task="classification", num_classes=2)
    with pytest.raises(ConfigError, match="is a classification model; use `pocus kd cls`"):
        run_kd(_cfg(kd_setup, tmp_path / "c", teacher_checkpoint=str(cls_teacher)))
    # a transfer set made only of the labelled data's val/test images is empty once they are removed
    from pocus_edge.finetune.data import read_samples, split_samples

    only_test = tmp_path / "only_test"
    only_test.mkdir()
    for s in split_samples(read_samples(labeled, "segmentation"), 0, False)["test"]:
        shutil.copy(s.image, only_test)
    with pytest.raises(DataError, match="left out as images of a held-out"):
        run_kd(_cfg(kd_setup, tmp_path / "d", data=[str(only_test)]))
    assert not (tmp_path / "d").exists()


def test_resume_without_a_checkpoint_fails_unless_auto(kd_setup, tmp_path):
    from pocus_edge.cli import resume_auto_argv
    from pocus_edge.distill.trainer import run_distillation

    strict = _cfg(kd_setup, tmp_path / "run", resume=True, max_steps=2).validate()
    with pytest.raises(ConfigError, match="no valid checkpoint.*--resume auto"):
        run_distillation(strict, TaskKD(strict))
    assert not (tmp_path / "run").exists()
    auto = dataclasses.replace(strict, resume="auto")
    assert run_distillation(auto, TaskKD(auto))["steps"] == 2
    assert resume_auto_argv(["kd", "--resume", "auto", "--seed", "1"]) == ["kd", "--resume-auto", "--seed", "1"]
    assert resume_auto_argv(["distill", "--resume", "--seed", "1"]) == ["distill", "--resume", "--seed", "1"]


def test_distill_can_leave_out_the_downstream_eval_images(kd_setup):
    """`pocus distill --exclude-eval-splits DIR`: no image of DIR's seg/cls validation or test split is distilled on."""
    from pocus_edge.distill.config import DistillConfig
    from pocus_edge.distill.ddp import init_distributed
    from pocus_edge.distill.method import TokenDistillation
    from pocus_edge.finetune.data import eval_split_digests

    root, labeled, transfer, _ = kd_setup
    cfg = DistillConfig(data=[str(labeled), str(transfer)], out=str(root / "d"), teacher_weights="random",
                        batch_size=8, exclude_eval_splits=[str(labeled)], num_workers=0).validate()
    data = TokenDistillation().prepare_data(cfg, init_distributed())
    digests = eval_split_digests(labeled, ("segmentation", "classification"), 0)
    assert len(data.corpus.excluded) == len(digests) > 0
    assert not set(data.corpus.frame_digests) & digests


def test_split_seed_keeps_one_test_set_across_training_seeds(kd_setup, tmp_path):
    from pocus_edge.finetune.train import FinetuneConfig, run_finetune

    labeled = kd_setup[1]
    common = dict(task="segmentation", data=str(labeled), architecture="mobilenetv3_small_100", epochs=1,
                  image_size=64, batch_size=8, max_steps_per_epoch=1, threads=1)
    run_finetune(FinetuneConfig(out=str(tmp_path / "a"), seed=0, **common))
    run_finetune(FinetuneConfig(out=str(tmp_path / "b"), seed=1, split_seed=0, **common))
    run_finetune(FinetuneConfig(out=str(tmp_path / "c"), seed=1, **common))
    splits = {k: (tmp_path / k / "splits.csv").read_text() for k in "abc"}
    assert splits["a"] == splits["b"] != splits["c"]
    a = json.loads((tmp_path / "a" / "model.json").read_text())
    b = json.loads((tmp_path / "b" / "model.json").read_text())
    assert a["weights_sha256"] != b["weights_sha256"]  # another training seed: another model on the same split
