import pytest
import torch

from pocus_edge.data.transforms import augment, eval_transform, normalize


def _top_bright_image() -> torch.Tensor:
    """Asymmetric test image: bright at the top (skin line), dark at the bottom (depth)."""
    ramp = torch.linspace(1.0, 0.0, 96).view(96, 1).expand(96, 80)
    return ramp.unsqueeze(0).clone()


def test_ultrasound_preset_never_flips_vertically_and_stays_grayscale():
    img = _top_bright_image()
    for seed in range(200):
        out = augment("ultrasound", img, 64, torch.Generator().manual_seed(seed))
        assert out.shape == (1, 64, 64)
        rows = out[0].mean(dim=1)
        assert rows[:8].mean() > rows[-8:].mean(), f"seed {seed} turned the image upside down"
        normed = normalize(out)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        rgb = normed * std + mean
        assert torch.allclose(rgb[0], rgb[1], atol=1e-6) and torch.allclose(rgb[1], rgb[2], atol=1e-6)


def test_ultrasound_preset_flips_horizontally_sometimes():
    left_bright = torch.linspace(1.0, 0.0, 80).view(1, 80).expand(96, 80).unsqueeze(0).clone()
    flips = 0
    for seed in range(50):
        out = augment("ultrasound", left_bright, 64, torch.Generator().manual_seed(seed))[0]
        flips += int(out[:, :8].mean() < out[:, -8:].mean())
    assert 10 < flips < 40


def test_presets_are_deterministic_by_seed():
    img = torch.rand(1, 90, 70)
    for preset in ("ultrasound", "natural"):
        a = augment(preset, img, 64, torch.Generator().manual_seed(5))
        b = augment(preset, img, 64, torch.Generator().manual_seed(5))
        assert torch.equal(a, b)


def test_natural_preset_applies_colour_jitter():
    img = torch.full((1, 64, 64), 0.5)
    outs = [augment("natural", img, 32, torch.Generator().manual_seed(s)) for s in range(30)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert len({round(float(o.mean()), 3) for o in outs}) > 5  # brightness/contrast/solarise change the image


def test_unknown_preset_and_eval_transform():
    with pytest.raises(ValueError, match="ultrasound"):
        augment("medical", torch.rand(1, 8, 8), 8, torch.Generator())
    assert eval_transform(torch.rand(1, 50, 70), 64).shape == (1, 64, 64)
