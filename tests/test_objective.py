import math

import pytest
import torch

from pocus_edge.distill.objective import R2Accumulator, lr_factor, mixup, token_mse


def test_token_mse_matches_hand_computed_eq6():
    # B=1, N=2 tokens, D=2 channels. Token 1 error (1, 3) -> MSE 5; token 2 error (0, 2) -> MSE 2.
    s = torch.tensor([[[1.0, 3.0], [0.0, 2.0]]])
    t = torch.zeros(1, 2, 2)
    assert token_mse(s, t).item() == pytest.approx((5 + 2) / 2)
    # batch of two: second sample all-zero error -> averaged over batch too
    s2 = torch.cat([s, torch.zeros(1, 2, 2)])
    assert token_mse(s2, torch.zeros(2, 2, 2)).item() == pytest.approx(3.5 / 2)


def test_token_mse_is_zero_for_identical_features_and_checks_shapes():
    x = torch.randn(3, 16, 8)
    assert token_mse(x, x.clone()).item() == 0.0
    with pytest.raises(ValueError, match="token shapes differ"):
        token_mse(x, torch.randn(3, 4, 8))


def test_mixup_is_a_convex_combination_of_batch_members():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    mixed, lam, perm = mixup(x, torch.Generator().manual_seed(3))
    assert 0.0 <= lam <= 1.0
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    again, lam2, perm2 = mixup(x, torch.Generator().manual_seed(3))
    assert lam2 == lam and torch.equal(perm2, perm) and torch.equal(again, mixed)


def test_mixup_lambda_is_uniform():
    lams = [mixup(torch.zeros(2, 1, 1, 1), torch.Generator().manual_seed(i))[1] for i in range(2000)]
    assert abs(sum(lams) / len(lams) - 0.5) < 0.03
    assert min(lams) < 0.05 and max(lams) > 0.95


def test_lr_schedule_warms_up_then_decays_to_min():
    f = [lr_factor(s, total_steps=100, warmup_steps=10, min_ratio=0.01) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[100] == pytest.approx(0.01)
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_r2_is_one_for_perfect_and_zero_for_mean_prediction():
    t = torch.randn(4, 10, 3)
    perfect = R2Accumulator()
    perfect.update(t, t)
    assert perfect.compute() == pytest.approx(1.0)
    mean_pred = R2Accumulator()
    mean = t.reshape(-1, 3).mean(0)
    mean_pred.update(mean.expand_as(t), t)
    assert mean_pred.compute() == pytest.approx(0.0, abs=1e-9)
