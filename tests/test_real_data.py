"""Integration on the real ultrasound in ../shared/data (skips with a reason when it is absent)."""

import json

import pytest
from conftest import require_shared_data, run_cli, tiny_config_yaml

from pocus_edge.data.corpus import scan_corpus, split_by_group

pytestmark = pytest.mark.data


def test_real_corpus_scan_dedups_and_groups_by_case_and_clip():
    data = require_shared_data()
    corpus = scan_corpus([data / "busi", data / "hc18", data / "lung"])
    assert not corpus.skipped
    assert len(corpus.duplicates) >= 1  # BUSI holds exact duplicates
    hc18_groups = {f.group for f in corpus.frames if f.group.startswith("hc18:")}
    lung_groups = {f.group for f in corpus.frames if f.group.startswith("lung:")}
    assert 800 <= len(hc18_groups) < 1334 - 1  # case ids, not one group per frame
    assert len(lung_groups) == 162  # one group per source clip/image
    assert not any("masks" in f.path for f in corpus.frames)
    train, held = split_by_group(corpus.frames, 0.1, seed=0)
    assert not {f.group for f in train} & {f.group for f in held}


def test_distill_runs_on_real_ultrasound_at_small_size(tmp_path):
    data = require_shared_data()
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", [data / "busi", data / "hc18", data / "lung"], batch_size=16,
                           max_steps=4, save_every="4", max_held_out=32, lr=1e-3)
    result = run_cli("distill", "--config", str(cfg), "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["train_images"] > 2000 and summary["held_out_images"] == 32
    assert summary["held_out_r2_end"] > summary["held_out_r2_start"]
    assert (tmp_path / "run" / "student.safetensors").is_file()
