"""Self-test on the device (issue 17 section 3): reference vectors written at export, `pocus verify`,
`load(verify=True)`, and run-to-run determinism of the backends here.

Bundles come from a tiny segmentation net (two 3x3 convolutions, 32 px) exported through the real `export()` path
(ONNX in about a second, TFLite int8 in a few). A "swapped" bundle gets another valid model file of the same shapes
(other weights) and is re-sealed, as an attacker or a broken build pipeline would: its digest verifies, its
reference vectors do not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pocus_edge.cli import _run, app
from pocus_edge.errors import ConfigError
from pocus_edge.export import export
from pocus_edge.models.tasks import TaskSpec
from pocus_edge.runtime import load
from pocus_edge.runtime.integrity import IntegrityError, seal
from pocus_edge.runtime.manifest import file_digest, inspect_bundle
from pocus_edge.runtime.selftest import (
    INDEX,
    SelfTestError,
    frame_metrics,
    judge,
    read_vectors,
    run_selftest,
    tolerance_for,
)

SIZE = 32


def tiny_segmenter(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)).eval()


def tiny_export(out: Path, monkeypatch, target: str = "onnx", precision: str = "fp32", seed: int = 0,
                **options) -> dict:
    spec = TaskSpec(name="tiny-seg", task="segmentation", encoder="tiny", labels=["background", "lesion"],
                    image_size=SIZE, threshold=0.5, source="test")
    monkeypatch.setattr("pocus_edge.export.api.resolve_model", lambda model, size: (tiny_segmenter(seed), spec))
    if precision == "int8":
        options.setdefault("parity_thresholds", {"dice_mean": 0.5, "dice_min": 0.0, "prob_abs_diff_mean": 0.2})
    return export("tiny", target, precision, out, image_size=SIZE, num_parity=12, **options)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, phantom_dir):
    """{name: bundle folder}: the good ONNX fp32 bundle and the same net with other weights (seed 1)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("selftest")
    try:
        tiny_export(root / "good", mp)
        tiny_export(root / "other", mp, seed=1)
    finally:
        mp.undo()
    return {"good": root / "good", "other": root / "other"}


def swap_model(good: Path, other: Path, dest: Path) -> Path:
    """GOOD with OTHER's model file, the manifest's sha256 (and tensor specs: an int8 model's own quantization
    would otherwise be refused at load) updated to match, and the bundle re-sealed."""
    shutil.copytree(good, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    theirs = json.loads((other / "manifest.json").read_text())
    manifest["inputs"], manifest["outputs"] = theirs["inputs"], theirs["outputs"]
    model_file = manifest["model_file"]
    shutil.copyfile(other / model_file, dest / model_file)
    manifest["files"][model_file] = file_digest(dest / model_file)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    seal(dest)
    return dest


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        _run(app, args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, " ".join(captured.err.split())


def test_bundle_carries_vectors_from_the_parity_backend_under_the_digest(bundles):
    bundle = bundles["good"]
    manifest, _ = inspect_bundle(bundle)
    assert manifest["reference_vectors"] == {"index": INDEX, "frames": 4, "expected_from": "onnxruntime"}
    for name in ("reference/vectors.json", "reference/input.bin", "reference/output.bin"):
        assert name in manifest["files"] and name in (bundle / "bundle.sha256").read_text()
    vectors = read_vectors(bundle, manifest)
    index = vectors.index
    assert index["expected_from"]["engine"] == "onnxruntime" and len(index["frames"]) == 4
    assert vectors.inputs.shape == (4, 3, SIZE, SIZE) and vectors.inputs.dtype == np.float32
    assert vectors.expected.shape == (4, 1, SIZE, SIZE)
    # the stored outputs are the exported file's on the host backend (identical), not PyTorch's (close, not equal)
    predictor = load(bundle)
    runtime_out = np.concatenate([predictor.run_model(vectors.inputs[k:k + 1]) for k in range(4)])
    assert np.array_equal(runtime_out, vectors.expected)
    with torch.no_grad():
        torch_out = tiny_segmenter(0)(torch.from_numpy(vectors.inputs)).numpy()
    assert np.allclose(torch_out, vectors.expected, atol=1e-4) and not np.array_equal(torch_out, vectors.expected)
    tol = index["tolerance"]
    assert tol["raw_max_abs"] == pytest.approx(1e-4 + 1e-4 * np.abs(vectors.expected).max())
    assert (tol["prob_max_abs"], tol["dice_min"]) == (1e-3, 0.99)


def test_good_bundle_passes_verify_cli_and_load(bundles, tmp_path, capsys):
    code, out, err = cli(["verify", str(bundles["good"]), "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    assert "mask_logits raw_max_abs: 0 (limit" in out and "dice_min: 1" in out and out.strip().endswith("passed")
    assert "identical outputs" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and report["deterministic"] and report["failure"] is None
    assert report["outputs"]["mask_logits"]["raw_max_abs"]["value"] == 0.0
    assert len(report["frames"]) == 4
    predictor = load(bundles["good"], verify=True)
    assert predictor.selftest is not None and predictor.selftest.passed


def test_swapped_model_resealed_passes_digest_but_fails_verify(bundles, tmp_path, capsys):
    swapped = swap_model(bundles["good"], bundles["other"], tmp_path / "swapped")
    inspect_bundle(swapped)  # the digest and the manifest's sha256s verify: only the self-test can tell
    load(swapped)
    code, out, err = cli(["verify", str(swapped)], capsys)
    assert code == 1 and out.strip().endswith("FAILED")
    assert err.startswith("self-test failed on onnxruntime: frame 0 (") and "raw_max_abs" in err
    assert "> " in err and "swapped or corrupted model file" in err and "Traceback" not in err
    with pytest.raises(SelfTestError, match=r"frame 0 .*raw_max_abs [0-9.e-]+ > "):
        load(swapped, verify=True)


def test_edited_vectors_fail_the_bundle_digest(bundles, tmp_path, capsys):
    for name in ("reference/output.bin", "reference/vectors.json"):
        bundle = tmp_path / name.replace("/", "_")
        shutil.copytree(bundles["good"], bundle)
        data = bytearray((bundle / name).read_bytes())
        data[-2] ^= 0x01  # one bit of a stored output, or of the index's last field
        (bundle / name).write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=f"{name} sha256 .* does not match bundle.sha256"):
            load(bundle, verify=True)
        code, _, err = cli(["verify", str(bundle)], capsys)
        assert code == 2 and err.startswith(f"error: {bundle}: {name} sha256")


def test_bundle_without_vectors_is_refused_with_a_re_export_hint(bundles, tmp_path, capsys):
    bundle = shutil.copytree(bundles["good"], tmp_path / "old")
    shutil.rmtree(bundle / "reference")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.pop("reference_vectors")
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("reference/")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    seal(bundle)  # an old bundle, exported before vectors existed
    load(bundle)  # loads as before
    code, _, err = cli(["verify", str(bundle)], capsys)
    assert code == 2 and "carries no reference vectors (reference/vectors.json)" in err and "Re-export" in err
    with pytest.raises(SelfTestError, match="no reference vectors"):
        load(bundle, verify=True)


def test_reference_frames_option(tmp_path, monkeypatch):
    manifest = tiny_export(tmp_path / "two", monkeypatch, reference_frames=2)
    assert manifest["reference_vectors"]["frames"] == 2
    names = [f["name"] for f in read_vectors(tmp_path / "two", manifest).index["frames"]]
    assert names == ["phantom:1000", "phantom:1011"]  # spread over the 12 parity frames
    for bad in (0, 65, 2.5, True):
        with pytest.raises(ConfigError, match=f"--reference-frames {bad!r}: give a whole number from 1 to 64"):
            tiny_export(tmp_path / "bad", monkeypatch, reference_frames=bad)
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("target,precision", [("onnx", "int8"), ("tflite", "int8")])
def test_int8_bundles_pass_and_a_swap_fails(target, precision, tmp_path, monkeypatch, phantom_dir):
    good, other = tmp_path / "good", tmp_path / "other"
    for out, seed in ((good, 0), (other, 1)):
        tiny_export(out, monkeypatch, target, precision, seed=seed, calib_data=phantom_dir, num_calib=16)
    report = run_selftest(load(good))
    assert report.passed and report.deterministic, report.failure_line()
    assert report.worst()["raw_max_abs"]["value"] == 0.0
    tol = report.tolerance
    if target == "tflite":  # int8 I/O: the raw output is judged in quantised units
        assert report.expected_from["engine"] == "tflite" and tol["raw_units"] == "quantized units"
        assert tol["raw_max_abs"] == 3.0
    assert (tol["prob_max_abs"], tol["dice_min"]) == (0.1, 0.9)
    swapped = swap_model(good, other, tmp_path / "swapped")
    with pytest.raises(SelfTestError, match="self-test failed on .*: frame 0 "):
        load(swapped, verify=True)
    assert_same_input_twice_gives_identical_output(good)  # the int8 bundle at 2 threads


def assert_same_input_twice_gives_identical_output(bundle: Path) -> None:
    predictor = load(bundle, threads=2)
    x, _ = predictor.preprocess([np.random.default_rng(0).random((40, 50))])
    first = predictor.run_model(x)
    for _ in range(3):
        assert np.array_equal(predictor.run_model(x), first)
    assert run_selftest(predictor).deterministic


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_same_input_twice_gives_identical_output(target, bundles, tmp_path, monkeypatch):
    """fp32 here; each int8 bundle of test_int8_bundles_pass_and_a_swap_fails is checked the same way."""
    if target == "onnx":
        bundle = bundles["good"]  # the module's ONNX fp32 bundle (the same export)
    else:
        bundle = tmp_path / "b"
        tiny_export(bundle, monkeypatch, target, "fp32")
    assert_same_input_twice_gives_identical_output(bundle)


def test_coreml_records_pytorch_outputs_and_says_so(tmp_path, monkeypatch):
    pytest.importorskip("coremltools")
    manifest = tiny_export(tmp_path / "cm", monkeypatch, "coreml", "fp32")
    vectors = read_vectors(tmp_path / "cm", manifest)
    source = vectors.index["expected_from"]
    assert source["engine"] == "pytorch" and "not the exported file's" in source["note"]
    assert manifest["reference_vectors"]["expected_from"] == "pytorch"
    assert vectors.inputs.dtype == np.uint8 and vectors.inputs.shape == (4, 1, SIZE, SIZE)
    tol = vectors.index["tolerance"]
    assert tol["raw_max_abs"] is None and tol["prob_max_abs"] == 0.05 and "loosened" in tol["rule"]


MANIFEST = {"task": "segmentation", "postprocessing": {"activation": "sigmoid", "threshold": 0.5},
            "outputs": [{"name": "mask_logits", "dtype": "float32", "layout": "NCHW"}]}


def test_metrics_and_limits_by_hand():
    expected = np.full((1, 1, 2, 2), -3.0, np.float32)
    expected[0, 0, 0, 0] = 3.0  # one foreground pixel
    actual = expected.copy()
    actual[0, 0, 1, 1] += 2e-4  # a tiny shift on a background pixel: mask unchanged
    metrics = frame_metrics(expected, actual, MANIFEST)
    assert metrics["raw_max_abs"] == pytest.approx(2e-4, rel=1e-3) and metrics["dice_min"] == 1.0
    assert metrics["prob_max_abs"] == pytest.approx(2e-4 * 0.0452, rel=2e-2)  # sigmoid'(-3) = 0.0452
    tol = tolerance_for("fp32", False, expected, loose=False)
    assert tol["raw_max_abs"] == pytest.approx(1e-4 + 3e-4)  # 1e-4 + 1e-4 x max|expected|
    assert judge(metrics, tol) == []
    actual[0, 0, 0, 0] = -1.0  # the foreground pixel flips
    flipped = frame_metrics(expected, actual, MANIFEST)
    assert flipped["dice_min"] == 0.0 and flipped["raw_max_abs"] == pytest.approx(4.0)
    # sigmoid(3) - sigmoid(-1) = 0.952574 - 0.268941
    assert judge(flipped, tol) == ["raw_max_abs 4 > 0.0004 output units", "prob_max_abs 0.683633 > 0.001",
                                   "dice_min 0 < 0.99"]
    actual[0, 0, 0, 0] = np.nan
    assert judge(frame_metrics(expected, actual, MANIFEST), tol)[0].startswith("raw_max_abs inf >")


def test_integer_outputs_are_judged_in_quantized_units():
    manifest = {**MANIFEST, "outputs": [{"name": "mask_logits", "dtype": "int8", "layout": "NHWC",
                                         "quantization": {"scale": 0.1, "zero_point": 2}}]}
    expected = np.full((1, 2, 2, 1), 2, np.int8)
    actual = expected.copy()
    actual[0, 1, 1, 0] = 6  # 4 units = 0.4 in logits
    tol = tolerance_for("int8", True, expected, loose=False)
    metrics = frame_metrics(expected, actual, manifest)
    assert metrics["raw_max_abs"] == 4.0 and tol["raw_max_abs"] == 3.0
    assert judge(metrics, tol) == ["raw_max_abs 4 > 3 quantized units"]
