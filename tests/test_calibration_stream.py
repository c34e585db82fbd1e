"""Streaming int8 calibration (export/quantize_calib.py) equals ONNX Runtime's in-memory calibration, and int8
parity never silently falls back to phantoms."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

from pocus_edge.errors import ConfigError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _tiny_graph(path):
    """image -> Conv(3->4) -> Relu -> Conv(4->2) -> Add(bias map): a few float tensors to calibrate."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=(1, 2, 1, 1)).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Add", ["c2", "b"], ["out"], name="add")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def _in_memory(path, method, frames, tmp_path):
    """ORT's own calibrator fed every frame at once (what quantize_static does)."""
    from pocus_edge.export.quantize_calib import ChunkReader, _calibrator

    cal = _calibrator(path, method, str(tmp_path))
    cal.collect_data(ChunkReader(frames, "image"))
    return cal.compute_data()


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_streaming_equals_in_memory(tmp_path, method):
    from pocus_edge.export.quantize_calib import calibrate

    model = _tiny_graph(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(1)
    frames = [(rng.normal(size=(1, 3, 8, 8)) * (1 + 3 * i)).astype(np.float32) for i in range(7)]  # widening ranges
    expected = _in_memory(model, method, frames, tmp_path)
    got = calibrate(model, lambda: iter(frames), [method], chunk=2)[method]  # 4 chunks, the last one short
    assert set(got.keys()) == set(expected.keys()) and len(got.keys()) >= 4
    for name in expected.keys():
        assert np.array_equal(np.asarray(got[name].range_value), np.asarray(expected[name].range_value)), name
        if method != "minmax":
            assert np.array_equal(got[name].hist, expected[name].hist), name


def test_histogram_pass_holds_one_chunk(tmp_path, monkeypatch):
    """The frames are consumed chunk by chunk: at most `chunk` model inputs exist at once."""
    from pocus_edge.export import quantize_calib

    model = _tiny_graph(tmp_path / "tiny.onnx")
    alive = {"now": 0, "most": 0}

    def frames():
        for i in range(9):
            alive["now"] += 1
            alive["most"] = max(alive["most"], alive["now"])
            yield np.full((1, 3, 8, 8), float(i), np.float32)

    real_chunks = quantize_calib._chunks

    def counting_chunks(source, size):
        for part in real_chunks(source, size):
            yield part
            alive["now"] -= len(part)

    monkeypatch.setattr(quantize_calib, "_chunks", counting_chunks)
    quantize_calib.calibrate(model, frames, ["minmax", "percentile"], chunk=3)
    assert alive["most"] == 3


def _one_group_folder(root, count=3):
    """`count` phantoms that all share one case id, chosen so the group hashes to the calibration side."""
    from pocus_edge.data.phantoms import write_phantom_dataset

    folder = write_phantom_dataset(root, count, size=(64, 64), seed=3)
    case = next(c for c in (f"case{i}" for i in range(100)) if int.from_bytes(
        hashlib.sha256(f"0:{folder.name}:{c}".encode()).digest()[:8], "big") / 2**64 >= 0.2)
    rows = list(csv.DictReader(open(folder / "manifest.csv")))
    for row in rows:
        row["case_id"] = case
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_int8_without_held_out_frames_is_an_error_not_phantoms(tmp_path):
    from pocus_edge.export.quantize_calib import frames_for

    folder = _one_group_folder(tmp_path / "one-case")
    with pytest.raises(ConfigError, match=r"too few .*--parity-data DIR.*--parity-data phantoms"):
        frames_for(True, folder, None, 50, 8)
    calib, parity = frames_for(True, folder, "phantoms", 50, 8)  # asked for by name: allowed, and said so
    assert len(calib.images) == 3 and parity.origin == "synthetic phantoms"
    calib, parity = frames_for(False, None, None, 0, 4)  # float exports keep the phantom default
    assert calib is None and parity.origin == "synthetic phantoms"


def test_int8_export_without_held_out_frames_writes_nothing(tmp_path):
    from pocus_edge.export import export

    folder = _one_group_folder(tmp_path / "one-case")
    with pytest.raises(ConfigError, match="--parity-data"):
        export("unet-resnet18", "onnx", "int8", tmp_path / "b", image_size=32, calib_data=folder)
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["one-case"]
