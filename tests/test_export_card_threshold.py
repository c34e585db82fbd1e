"""A segmentation checkpoint whose card lost its threshold is refused at export, never given a silent 0.5."""

import json
from types import SimpleNamespace

import pytest

from pocus_edge.errors import CheckpointError
from pocus_edge.export.source import resolve_model
from pocus_edge.finetune.model import save_task_model
from pocus_edge.models.registry import create_model


@pytest.fixture
def checkpoint(tmp_path):
    cfg = SimpleNamespace(architecture="resnet18", image_size=64, task="segmentation", linear_probe=False,
                          label_fraction=1.0)
    init = {"origin": "random", "init_sha256": None, "decoder_channels": [64, 32, 16, 8, 4],
            "smoke_test_only": True}
    path = tmp_path / "model.safetensors"
    save_task_model(path, create_model("segmentation", "resnet18", decoder_channels=(64, 32, 16, 8, 4)), cfg,
                    ["lesion"], init)
    return path


def test_the_cards_threshold_is_used(checkpoint):
    card = checkpoint.with_suffix(".json")
    data = json.loads(card.read_text())
    card.write_text(json.dumps({**data, "threshold": 0.3}))
    _, spec = resolve_model(str(checkpoint), 64)
    assert spec.threshold == 0.3


@pytest.mark.parametrize("threshold", ["missing", None, 1.5, True])
def test_a_card_without_a_valid_threshold_is_refused(checkpoint, threshold):
    card = checkpoint.with_suffix(".json")
    data = json.loads(card.read_text())
    data.pop("threshold") if threshold == "missing" else data.update(threshold=threshold)
    card.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="the card's threshold is .*a segmentation card needs its mask threshold"):
        resolve_model(str(checkpoint), 64)
