"""`pocus demo` runs the spine on the embedded default and on a folder given with --data."""

import json
import math

from conftest import run_cli


def test_demo_on_embedded_phantoms(tmp_path):
    """The spine's numbers: every phantom used once, the steps asked, the student moved, every key reloaded, parity."""
    import timm

    from pocus_edge.demo import DEMO_IMAGES, run_demo
    from pocus_edge.models.encoder_io import load_encoder_state
    from pocus_edge.runtime import verify_bundle

    out = tmp_path / "demo"
    summary = run_demo(out, None, steps=2, quiet=True)
    assert summary["train_images"] + summary["held_out_images"] == DEMO_IMAGES
    assert 0 < summary["held_out_images"] < DEMO_IMAGES * 0.3 and summary["distill_steps"] == 2
    r2 = (summary["held_out_r2_start"], summary["held_out_r2_end"])
    assert all(math.isfinite(v) and v <= 1 for v in r2) and r2[0] != r2[1], r2  # two steps changed the student
    assert summary["student_loads_into_timm"] is True
    state, card = load_encoder_state(out / "distill" / "student.safetensors")
    expected = timm.create_model(card["architecture"], pretrained=False, num_classes=0).state_dict()
    assert card["architecture"] == "resnet50" and set(state) == set(expected) and len(state) == len(expected)
    assert (out / "phantoms" / "manifest.csv").read_text().count("\n") == DEMO_IMAGES + 1  # header + one per image
    manifest = verify_bundle(out / "bundle-onnx")
    assert manifest["task"] == "embedding" and manifest["parity"]["status"] == summary["bundle_parity"] == "passed"
    limit = json.loads((out / "bundle-onnx" / "parity.json").read_text())["thresholds"]["cosine_min"]
    assert limit[0] == "min" and summary["bundle_cosine_min"] >= limit[1] >= 0.999, (summary, limit)
    assert summary["runtime_embedding_dim"] == manifest["outputs"][0]["shape"][-1] == 2048


def test_demo_on_a_given_folder(phantom_dir, tmp_path):
    result = run_cli("demo", "--data", str(phantom_dir), "--steps", "2", "--out", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "demo" / "phantoms").exists()
    assert str(phantom_dir) in result.stdout and "passed" in result.stdout  # the summary names the data, parity
    assert (tmp_path / "demo" / "bundle-onnx" / "manifest.json").is_file()
