"""Torch-free runtime: input rules, shapes, backends, agreement on real images, streaming and `pocus predict`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, require_shared_data, run_cli
from PIL import Image

from pocus_edge.runtime import BundleError, InputError, load, stream
from pocus_edge.runtime.images import load_gray, to_gray01
from pocus_edge.runtime.preprocess import model_input, quantize, resize_bilinear, resize_weights


def test_runtime_runs_without_torch(bundle_factory):
    """Import and run onnx and tflite bundles in a process where importing torch raises."""
    bundles = [bundle_factory("onnx", "fp32"), bundle_factory("tflite", "int8")]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, pocus_edge.runtime as rt\n"
        f"for b in {[str(b) for b in bundles]!r}:\n"
        "    r = rt.load(b, threads=1)(np.zeros((40, 50), np.uint8)); assert r.mask.shape == (40, 50)\n"
        "assert not any(m.startswith('torch') and sys.modules[m] is not None for m in sys.modules)\n"
        "print('torch-free ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "torch-free ok" in proc.stdout, proc.stderr[-2000:]


def test_input_rules():
    assert to_gray01(np.full((4, 5), 255, np.uint8)).max() == 1.0
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    # whole-number BT.601 luma, round half up: training, runtime and the Android core decode colour identically
    np.testing.assert_array_equal(to_gray01(rgb), ((rgb.astype(np.int64) @ [299, 587, 114] + 500) // 1000)
                                  .astype(np.float32) / np.float32(255))
    same = np.repeat(np.arange(42, dtype=np.uint8).reshape(6, 7, 1), 3, axis=2)
    assert np.allclose(to_gray01(same), same[..., 0] / 255.0, atol=1e-6)  # R = G = B stays unchanged
    bad = [(np.zeros((0, 5), np.uint8), "empty"), (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
           (np.array([[0.5, np.nan]]), "NaN"), (np.zeros((3, 3), np.int32), "unsupported dtype"),
           (np.zeros((3, 3), np.uint16), "16-bit"), (np.full((3, 3), 200.0), r"\[0, 1\]")]
    for array, message in bad:
        with pytest.raises(InputError, match=message):
            to_gray01(array)
    with pytest.raises(InputError, match="decompression bomb"):
        to_gray01(np.zeros((10, 10), np.uint8), max_pixels=50)
    with pytest.raises(InputError, match="unsupported input"):
        load_gray([1, 2, 3])


def test_image_files(tmp_path):
    Image.fromarray(np.full((20, 30), 1000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(InputError, match="16-bit"):
        load_gray(tmp_path / "deep.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        load_gray(tmp_path / "junk.png")
    with pytest.raises(InputError, match="no such image"):
        load_gray(tmp_path / "absent.png")
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "rgb.png")
    assert load_gray(tmp_path / "rgb.png").shape == (20, 30)


def test_resize_matches_pil_float_bilinear():
    rng = np.random.default_rng(1)
    image = rng.random((37, 53), dtype=np.float32)
    assert np.allclose(resize_weights(9, 4).sum(axis=1), 1.0)
    assert np.allclose(resize_bilinear(image, 37, 53), image, atol=1e-6)  # same size is the identity
    for height, width in ((16, 16), (64, 80), (20, 100)):
        ours = resize_bilinear(image, height, width)
        pil = np.asarray(Image.fromarray(image, mode="F").resize((width, height), Image.BILINEAR))
        assert np.abs(ours - pil).max() < 1e-4, (height, width)


def test_quantize_rounds_half_to_even_and_clamps():
    q = quantize(np.array([-1000.0, -0.5, 0.5, 1.5, 1000.0]), scale=1.0, zero_point=0, dtype="int8")
    assert q.tolist() == [-128, 0, 0, 2, 127]


def test_model_input_layouts():
    manifest = {"inputs": [{"dtype": "float32", "layout": "NHWC"}],
                "preprocessing": {"image_size": [8, 8], "raw_input": False, "scale": 1 / 255,
                                  "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    x = model_input([np.ones((10, 12), np.float32)], manifest)
    assert x.shape == (1, 8, 8, 3) and np.allclose(x, 1.0)


def test_result_shapes_at_non_square_sizes(bundle_factory):
    image = np.random.default_rng(2).integers(0, 256, (123, 217), dtype=np.uint8)
    seg = load(bundle_factory("onnx", "fp32"))(image)
    assert seg.mask.shape == (123, 217) and seg.probabilities.shape == (1, 123, 217)
    assert set(np.unique(seg.mask)) <= {0, 1} and seg.overlay(image).shape == (123, 217, 3)
    cls = load(bundle_factory("onnx", "fp32", model="classifier-resnet50"))(image)
    assert cls.label in ("benign", "malignant", "normal")
    assert abs(sum(cls.probabilities.values()) - 1) < 1e-5
    emb = load(bundle_factory("tflite", "fp32", model="encoder-resnet50"))(image.T)
    assert emb.vector.shape == (2048,)


def test_threads_are_honoured(bundle_factory):
    ort_predictor = load(bundle_factory("onnx", "fp32"), threads=1)
    assert ort_predictor.backend.session.get_session_options().intra_op_num_threads == 1
    tfl = load(bundle_factory("tflite", "fp32"), threads=2)
    assert tfl.backend.threads == 2
    with pytest.raises(BundleError, match="threads"):
        load(bundle_factory("onnx", "fp32"), threads=0)


def test_dynamic_batch_runs_in_one_call(bundle_factory):
    predictor = load(bundle_factory("onnx", "fp32", model="unet-resnet18", dynamic_batch=True))
    assert predictor.backend.fixed_batch is None
    results = predictor.batch([np.zeros((30, 40), np.uint8), np.ones((50, 20), np.uint8) * 200])
    assert [r.mask.shape for r in results] == [(30, 40), (50, 20)]


def test_int8_quantization_mismatch_is_refused(bundle_factory, tmp_path):
    import shutil

    bundle = tmp_path / "q"
    shutil.copytree(bundle_factory("tflite", "int8"), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["inputs"][0]["quantization"]["scale"] *= 2
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest was edited"):
        load(bundle)  # the bundle digest catches the edit first
    from pocus_edge.runtime.integrity import seal

    seal(bundle)  # a re-sealed edit passes the digest; the model's own quantization check still refuses it
    with pytest.raises(BundleError, match="quantization"):
        load(bundle)


def test_backend_choice_errors(bundle_factory):
    from pocus_edge.errors import PocusError

    with pytest.raises(PocusError, match=r"^backend tflite cannot run a onnx bundle; use onnxruntime$"):
        load(bundle_factory("onnx", "fp32"), backend="tflite")
    with pytest.raises(PocusError, match=r"^backend 'openvino' is unknown; choose one of onnxruntime, .*tflite"):
        load(bundle_factory("onnx", "fp32"), backend="openvino")


@pytest.mark.data
def test_backends_agree_on_real_images(bundle_factory, task_model):
    """onnx fp32 and tflite fp32 bundles of one model: masks agree with each other and with PyTorch."""
    from pocus_edge.export.parity import reference_outputs
    from pocus_edge.runtime.postprocess import dice, sigmoid

    data = require_shared_data()
    paths = sorted((data / "busi" / "images").glob("*.png"))[::60][:12]
    onnx_p, tfl_p = load(bundle_factory("onnx", "fp32")), load(bundle_factory("tflite", "fp32"))
    a, b = onnx_p.batch(paths), tfl_p.batch(paths)
    for ra, rb in zip(a, b, strict=True):
        assert dice(ra.mask, rb.mask) >= 0.99
    # PyTorch on the same frames, the mask judged at model resolution (what parity compares)
    net, _ = task_model("segmentation")  # the same deterministic smoke model the bundles hold
    grays = [load_gray(p) for p in paths]
    ref = sigmoid(reference_outputs(net, grays, onnx_p.manifest["preprocessing"]))[:, 0] >= 0.5
    out = sigmoid(onnx_p.raw_outputs(grays))[:, 0] >= 0.5
    tfl = sigmoid(tfl_p.raw_outputs(grays))[:, 0] >= 0.5
    assert min(dice(r, o) for r, o in zip(ref, out, strict=True)) >= 0.99
    assert min(dice(r, t) for r, t in zip(ref, tfl, strict=True)) >= 0.99


def test_stream_smoothing_and_video(bundle_factory, tmp_path):
    import cv2

    predictor = load(bundle_factory("onnx", "fp32"))
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 64), dtype=np.uint8) for _ in range(4)]
    raw = list(stream(predictor, frames))
    smooth = list(stream(predictor, frames, smoothing=0.5))
    assert all(r.latency_ms > 0 for r in raw)
    expected = 0.5 * raw[0].probabilities + 0.5 * raw[1].probabilities
    assert np.allclose(smooth[1].probabilities, expected, atol=1e-6)
    video = tmp_path / "loop.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()
    assert len(list(stream(predictor, video))) == 4


def test_predict_cli(bundle_factory, tmp_path, phantom_dir):
    images = sorted((phantom_dir / "images").glob("*.png"))[:2]
    out = tmp_path / "pred"
    proc = run_cli("predict", str(bundle_factory("onnx", "fp32")), *map(str, images), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "results.json").read_text())
    assert len(report["results"]) == 2
    mask = np.asarray(Image.open(out / report["results"][0]["mask"]))
    assert mask.shape == np.asarray(Image.open(images[0])).shape[:2]
    assert (out / report["results"][0]["overlay"]).is_file()
    bad = run_cli("predict", str(bundle_factory("onnx", "fp32")), str(tmp_path / "nope.png"), "--out", str(out))
    assert bad.returncode == 2 and "no such image" in bad.stderr and "Traceback" not in bad.stderr
