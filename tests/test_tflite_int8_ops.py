"""int8 TFLite (PT2E) quantiser: residual adds, skip concatenations and hard-swish are quantised under
torch.export's default (non-strict) trace, and a tensor read by both a padded convolution and a skip concatenation
converts (it failed with "'tfl.pad' op quantization parameters violate the same scale constraint", the
MobileNetV3-S U-Net; its full export is in the slow matrix, tests/test_arch_export.py)."""

from __future__ import annotations

import collections
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("litert_torch")
SIZE = 32


class SkipNet(nn.Module):
    """The MobileNetV3-S U-Net pattern in miniature: a hard-swish stem read by a stride-2 padded depthwise conv
    and by the decoder's skip concatenation, then a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fuse = nn.Conv2d(16, 8, 3, 1, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.hardswish(self.stem(x))
        deep = F.interpolate(self.pw(self.dw(skip)), scale_factor=2.0, mode="nearest")
        return self.head(self.fuse(torch.cat([deep, skip], 1)) + skip)


def _inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32) for _ in range(n)]


def test_quantizer_annotates_add_cat_and_hardswish_of_a_non_strict_export():
    from pocus_edge.export.tflite import int8_quantizer

    graph = torch.export.export(SkipNet().eval(), (torch.zeros(1, 3, SIZE, SIZE),)).module()
    int8_quantizer().annotate(graph)
    seen = collections.Counter()
    for node in graph.graph.nodes:
        name = getattr(node.target, "__name__", "")
        if name.split(".")[0] in ("add", "cat", "hardswish"):
            annotation = node.meta.get("quantization_annotation")
            assert annotation is not None and annotation.output_qspec is not None, f"{node.target} left in float"
            assert all(isinstance(a, torch.fx.Node) for a in annotation.input_qspec_map)
            seen[name.split(".")[0]] += 1
    assert seen == {"add": 1, "cat": 1, "hardswish": 1}


def test_hardswish_skip_into_a_padded_conv_converts_to_int8_tflite(tmp_path, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    from pocus_edge.export import quantize, tflite

    model = SkipNet().eval()
    monkeypatch.setattr(quantize, "calibration_batches", lambda request: _inputs(8))
    request = types.SimpleNamespace(model=model, raw_input=False, image_size=SIZE, options={}, parity_images=None,
                                    parity_thresholds=None,
                                    spec=types.SimpleNamespace(task="segmentation", labels=["lesion"], threshold=0.5))
    path = tmp_path / "model.tflite"
    options, _ = tflite._convert_int8(model, request, path)  # old quantiser: litert-torch's 'tfl.pad' same-scale error
    assert options["mixed_precision"] == {"mode": "off: no held-out frames"} and options["float_layers"] == []

    interpreter = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only op list the Python wheel exposes
    float_ops = [o["op_name"] for o in ops if dtypes[o["outputs"][0]] == "float32" and o["op_name"] != "DEQUANTIZE"]
    assert float_ops == [], f"float fallbacks in the int8 graph: {float_ops}"
    assert {"ADD", "CONCATENATION", "HARD_SWISH", "PAD"} <= {o["op_name"] for o in ops}

    # and the int8 model computes what the float one does (int8 I/O: quantise with the tensors' own parameters)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    x = _inputs(9)[-1]
    interpreter.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8))
    interpreter.invoke()
    got = (interpreter.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).mean() < 0.1 * want.std(), (np.abs(got - want).mean(), want.std())
