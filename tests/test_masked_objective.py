"""`pocus distill --objective masked-consistency`: masks, consistency weights and loss terms by hand; a tiny run
whose resume is bit-exact and whose card records the settings; settings refused where they would be ignored."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import yaml
from conftest import TINY_TEACHER, pocus_here, tiny_config_yaml

from pocus_edge.distill.config import DistillConfig, load_config
from pocus_edge.distill.masked import (
    MaskedConsistency,
    MaskSettings,
    block_mask,
    consistency_weights,
    frequency_view,
    masked_consistency_loss,
    ring_drop,
    ring_index,
)
from pocus_edge.errors import ConfigError


def test_block_mask_blanks_whole_blocks_at_the_stated_fraction():
    g = torch.Generator().manual_seed(0)
    mask = block_mask(5, (64, 64), 16, 0.5, g)  # 16 blocks of 16 x 16 px, 8 blanked per image
    assert mask.shape == (5, 1, 64, 64) and mask.dtype == torch.bool
    assert mask.float().mean(dim=(1, 2, 3)).tolist() == [0.5] * 5
    blocks = mask.view(5, 4, 16, 4, 16)
    assert torch.equal(blocks.all(dim=(2, 4)), blocks.any(dim=(2, 4)))  # every block all-or-nothing
    assert not torch.equal(mask[0], mask[1])  # each image draws its own blocks
    # 0.6 of 16 blocks = 9.6 -> 10 (rounded half up); ratio 0 blanks nothing
    assert block_mask(2, (64, 64), 16, 0.6, g).float().mean().item() == 10 / 16
    assert not block_mask(2, (64, 64), 16, 0.0, g).any()
    again = block_mask(5, (64, 64), 16, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # a pure function of the generator's seed


def test_ring_mask_zeroes_the_stated_share_of_rings_and_keeps_the_centre():
    index = ring_index((32, 32), 8, 0.25)
    assert index[0, 0] == 0  # DC is in the protected centre
    assert set(index.unique().tolist()) == set(range(9))
    assert index[16, 16] == 8  # the corner (Nyquist, Nyquist) frequency is in the outermost ring
    assert torch.equal(index, index.flip(0).roll(1, 0).flip(1).roll(1, 1))  # same ring at f and -f

    drop = ring_drop(6, 8, 0.5, torch.Generator().manual_seed(1))
    assert drop.sum(dim=1).tolist() == [4] * 6  # half of the 8 rings of every image

    images = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    view = frequency_view(images, drop, index)
    spectrum = torch.fft.fft2(view)
    for b in range(6):
        dropped = drop[b][index - 1] & (index > 0)
        assert spectrum[b][:, dropped].abs().max() < 1e-9  # every dropped ring's frequencies are gone
        kept = ~dropped
        assert torch.allclose(spectrum[b][:, kept], torch.fft.fft2(images[b])[:, kept], atol=1e-9)
    assert torch.allclose(view.mean(dim=(2, 3)), images.mean(dim=(2, 3)))  # the mean (DC) survives
    all_dropped = frequency_view(images, torch.ones(6, 8, dtype=torch.bool), index)
    assert torch.allclose(all_dropped, frequency_view(images, ring_drop(6, 8, 1.0, torch.Generator()), index))


def test_a_consistent_teacher_gives_every_sample_weight_one():
    tokens = torch.randn(4, 9, 6)
    assert torch.allclose(consistency_weights(tokens, tokens), torch.ones(4))
    assert torch.allclose(consistency_weights(tokens, 3.0 * tokens), torch.ones(4))  # cosine ignores scale
    # sample 0 consistent (cos 1 -> raw 1), sample 1 orthogonal (cos 0 -> raw 0.5): mean 0.75 -> 4/3 and 2/3
    a = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    b = torch.tensor([[[2.0, 0.0]], [[0.0, 5.0]]])
    assert torch.allclose(consistency_weights(a, b), torch.tensor([4 / 3, 2 / 3]))
    assert torch.allclose(consistency_weights(a, b, power=2.0), torch.tensor([1 / 0.625, 0.25 / 0.625]))
    assert torch.allclose(consistency_weights(a, b, power=0.0), torch.ones(2))


def test_loss_terms_against_hand_computation():
    teacher_clean = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])  # B=2, N=1, D=2
    # view-major rows: spatial view of images 0, 1, then frequency view of images 0, 1
    view_tokens = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    # per view MSE: image 0 -> (0 + 4)/2 = 2 and 0; image 1 -> (4 + 0)/2 = 2 and 0; d = [1, 1]
    clean = torch.zeros(2, 1, 1, 2)
    reconstruction = torch.tensor([[[[1.0, -1.0]]], [[[0.0, 0.0]]], [[[2.0, 0.0]]], [[[0.0, 4.0]]]])  # L1 = 8/8
    weights = torch.tensor([1.5, 0.5])
    terms = masked_consistency_loss(view_tokens, reconstruction, teacher_clean, clean, weights, 2.0, 0.5)
    assert terms.feature.item() == pytest.approx((1.5 * 1 + 0.5 * 1) / 2)
    assert terms.reconstruction.item() == pytest.approx(1.0)
    assert terms.total.item() == pytest.approx(2.0 * 1.0 + 0.5 * 1.0)
    # unequal per-sample distances: the weights decide which sample counts more
    view_tokens[1] = torch.tensor([[4.0, 0.0]])  # image 1, spatial view: MSE 8 -> d_1 = 4
    terms = masked_consistency_loss(view_tokens, reconstruction, teacher_clean, clean, weights, 1.0, 0.0)
    assert terms.total.item() == pytest.approx((1.5 * 1 + 0.5 * 4) / 2)


def _tiny(tmp_path, **overrides) -> DistillConfig:
    path = tiny_config_yaml(tmp_path / "cfg.yaml", overrides.pop("data"), objective="masked-consistency",
                            mask_block=16, lr=1e-3, **overrides)
    return load_config(path, {"out": str(tmp_path / "run")}).validate()


def test_views_are_drawn_from_the_micro_batch_seed():
    method = MaskedConsistency()
    method.settings = MaskSettings.of(DistillConfig(mask_block=16, mask_ratio=0.5, mask_rings=4))
    images = torch.randn(3, 3, 64, 64)
    method.batch_seed = 7
    first = method.views(images)
    second = method.views(images)
    method.batch_seed = 8
    other = method.views(images)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])
    assert (first[0] == 0).float().mean().item() == pytest.approx(0.5)


def test_tiny_run_resumes_bit_exact_and_records_its_settings(phantom_dir, tmp_path):
    from safetensors.torch import load_file

    from pocus_edge.distill.trainer import run_distillation

    cfg = _tiny(tmp_path, data=phantom_dir, max_steps=6, save_every="2", mask_ratio=0.5, recon_weight=0.5)
    summary = run_distillation(cfg)
    run = tmp_path / "run"
    card = json.loads((run / "student.json").read_text())
    assert card["config"]["objective"] == "masked-consistency"
    assert card["config"]["mask_ratio"] == 0.5 and card["config"]["recon_weight"] == 0.5
    assert card["architecture"] == "resnet18" and summary["steps"] == 6
    assert yaml.safe_load((run / "config.yaml").read_text())["mask_block"] == 16
    assert not any(k.startswith("decoder") for k in load_file(run / "student.safetensors"))  # the encoder only
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 6 and all(x == x and x > 0 for x in losses)

    part = tmp_path / "part"
    shutil.copytree(run, part)
    for name in ("step-00000006.pt", "step-00000006.pt.sha256", "step-00000004.pt", "step-00000004.pt.sha256"):
        (part / "checkpoints" / name).unlink()  # as if killed after the step-2 checkpoint
    (part / "student.safetensors").unlink()
    run_distillation(dataclasses.replace(cfg, out=str(part), resume=True))
    expected, actual = load_file(run / "student.safetensors"), load_file(part / "student.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)

    with pytest.raises(ConfigError, match="mask_ratio"):
        run_distillation(dataclasses.replace(cfg, out=str(part), resume=True, mask_ratio=0.25))
    plain = dataclasses.replace(cfg, out=str(part), resume=True, objective="token-mse", mask_ratio=0.6,
                                mask_block=32, recon_weight=1.0)
    with pytest.raises(ConfigError, match="objective: 'masked-consistency' -> 'token-mse'"):
        run_distillation(plain)


def test_a_run_started_before_the_objective_setting_existed_still_resumes(tmp_path):
    from pocus_edge.distill.setup import RESUME_FIELDS, check_resume_compatible

    cfg = DistillConfig(out=str(tmp_path))
    old = {k: v for k, v in cfg.to_dict().items() if k != "objective"}
    check_resume_compatible(old, cfg, RESUME_FIELDS)  # missing = the default the old run used
    with pytest.raises(ConfigError, match="objective"):
        check_resume_compatible(old, dataclasses.replace(cfg, objective="masked-consistency"), RESUME_FIELDS)


@pytest.mark.parametrize("settings,message", [
    ({"objective": "masked"}, "--objective 'masked': choose one of token-mse, masked-consistency"),
    ({"mask_ratio": 0.5}, "--mask-ratio: only used by --objective masked-consistency"),
    ({"objective": "masked-consistency", "mask_ratio": 1.0}, "--mask-ratio 1.0: must lie in [0, 1)"),
    ({"objective": "masked-consistency", "mask_ratio": 0.9, "mask_block": 32}, "would blank every 32-px block"),
    ({"objective": "masked-consistency", "mask_block": 24}, "--mask-block 24: must be a positive divisor"),
    ({"objective": "masked-consistency", "ring_mask_ratio": -0.1}, "--ring-mask-ratio -0.1"),
    ({"objective": "masked-consistency", "mask_rings": 0}, "--mask-rings 0: must be 1..64"),
    ({"objective": "masked-consistency", "ring_keep_radius": 0.0}, "--ring-keep-radius 0.0: must lie in (0, 1)"),
    ({"objective": "masked-consistency", "consistency_power": float("nan")}, "--consistency-power nan"),
    ({"objective": "masked-consistency", "feature_weight": 0.0, "recon_weight": 0.0}, "not both 0"),
    ({"objective": "masked-consistency", "recon_hidden": 0}, "--recon-hidden 0: must be 1..8192"),
    ({"objective": "masked-consistency", "mask_ratio": "0.6"}, "mask_ratio must be a number, got '0.6'"),
    ({"objective": "masked-consistency", "mask_block": 16.0}, "mask_block must be an integer"),
])
def test_settings_are_refused_with_the_reason(tmp_path, settings, message):
    cfg = DistillConfig(data=["x"], out=str(tmp_path / "run"), teacher_weights="random", image_size=64, **settings)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert message in str(info.value)


def test_cli_objective_runs_and_refuses_unused_settings(phantom_dir, tmp_path, capsys):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=2, save_every="2",
                           teacher_kwargs=TINY_TEACHER)
    code, out, err = pocus_here(["distill", "--config", cfg, "--out", tmp_path / "run", "--objective",
                                 "masked-consistency", "--mask-block", "16", "--consistency-power", "2", "--json"],
                                capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == 2
    saved = json.loads((tmp_path / "run" / "student.json").read_text())["config"]
    assert saved["objective"] == "masked-consistency" and saved["consistency_power"] == 2.0
    code, _, err = pocus_here(["distill", "--config", cfg, "--out", tmp_path / "run2", "--recon-weight", "0.5"],
                              capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: --recon-weight: only used by --objective")
    assert not (tmp_path / "run2").exists()


def test_a_command_with_its_own_method_refuses_a_distill_objective(tmp_path):
    from pocus_edge.distill.ddp import DistEnv
    from pocus_edge.distill.method import TokenDistillation
    from pocus_edge.distill.trainer import Distiller

    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    cfg = DistillConfig(out=str(tmp_path / "run"), objective="masked-consistency")
    with pytest.raises(ConfigError, match="objective 'masked-consistency' is a `pocus distill` setting"):
        Distiller(cfg, env, TokenDistillation())  # e.g. pocus kd (TaskKD) given a YAML with this objective
