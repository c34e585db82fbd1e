"""`pocus demo` runs the spine on the embedded default and on a folder given with --data."""

import json
import math

import pytest
from adversarial.test_cli_usage import run_pocus
from conftest import run_cli


def test_demo_cli_on_embedded_phantoms(tmp_path, capsys, monkeypatch):
    """The spine's numbers, through the command line: every phantom used once, the steps asked, the student moved,
    every key reloaded, parity; the printed summary says parity passed."""
    import timm

    import pocus_edge.demo as demo_module
    from pocus_edge.cli import _run, app
    from pocus_edge.demo import DEMO_IMAGES
    from pocus_edge.models.encoder_io import load_encoder_state
    from pocus_edge.runtime import verify_bundle

    summaries = []
    real_run_demo = demo_module.run_demo
    monkeypatch.setattr(demo_module, "run_demo", lambda *args: summaries.append(real_run_demo(*args)) or summaries[-1])
    out = tmp_path / "demo"
    _run(app, ["demo", "--steps", "2", "--out", str(out)], prog_name="pocus")  # exit code 0: returns
    printed = capsys.readouterr().out
    (summary,) = summaries
    assert "pocus demo" in printed and "passed" in printed
    assert summary["data"] == str(out / "phantoms")
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


def test_demo_data_goes_to_the_distillation_and_no_phantoms_are_made(tmp_path, capsys):
    """--data replaces the embedded phantoms: an empty folder is refused by the distillation, with nothing generated."""
    (tmp_path / "empty").mkdir()
    code, _, err = run_pocus(["demo", "--data", tmp_path / "empty", "--out", tmp_path / "demo", "--steps", "2"],
                             capsys)
    assert code == 2 and f"no usable images found in {tmp_path / 'empty'}" in err and "Traceback" not in err
    assert not (tmp_path / "demo" / "phantoms").exists()


@pytest.mark.slow  # the same spine as test_demo_cli_on_embedded_phantoms (the default run), on a given folder
def test_demo_on_a_given_folder(phantom_dir, tmp_path):
    result = run_cli("demo", "--data", str(phantom_dir), "--steps", "2", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "demo" / "phantoms").exists()
    assert str(phantom_dir) in result.stdout and "passed" in result.stdout  # the summary names the data, parity
    assert (tmp_path / "demo" / "bundle-onnx" / "manifest.json").is_file()
