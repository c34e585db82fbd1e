"""The int8 sensitivity report names layers as the user knows them and draws a chart that fits its labels.

- A convolution followed by BatchNorm is one fused ONNX Conv that the exporter files under the BatchNorm's scope;
  the report's module column (and --float-layers) name the convolution (`block.0`), not the BatchNorm (`block.1`).
- The PNG: every layer label whole and inside the figure, left of the axes; the x axis spans the SQNR values
  instead of starting at 0 dB (where a 32-35 dB ranking is a row of equal bars); the metric named on the axis.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pocus_edge.models.tasks import TaskSpec

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
SIZE = 32


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 1, 1)
        with torch.no_grad():
            self.block[1].running_mean.normal_(0, 0.2)
            self.block[1].running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def test_a_batchnorm_fused_conv_is_named_by_its_convolution(tmp_path, phantom_dir, monkeypatch):
    from pocus_edge.export import api, export

    spec = TaskSpec(name="convbn", task="segmentation", encoder="toy", labels=["background", "lesion"],
                    image_size=SIZE, source="test: conv + BatchNorm")
    monkeypatch.setattr(api, "resolve_model", lambda model, size: (ConvBN().eval(), spec))
    manifest = export("convbn", "onnx", "int8", tmp_path / "b", image_size=SIZE, calib_data=phantom_dir,
                      explain=True, float_layers="block.0",  # a module path names its ONNX node too
                      parity_thresholds={"dice_mean": 0.0, "dice_min": 0.0, "prob_abs_diff_mean": 1.0})
    report = json.loads((tmp_path / "b" / "quant_report.json").read_text())
    modules = sorted(r["module"] for r in report["layers"])
    assert modules == ["block.0", "head"]  # old: ["block.1", "head"], the BatchNorm's scope
    node = next(r["layer"] for r in report["layers"] if r["module"] == "block.0")
    assert manifest["target_options"]["float_layers"] == [node]
    assert manifest["target_options"]["float_layer_modules"] == {node: "block.0"}
    assert f"`{node}` | block.0 | Conv |" in (tmp_path / "b" / "quant_report.md").read_text()


def _report(n: int = 12) -> dict:
    long = "decoder.blocks.3.conv1.0.very_long_submodule_name_for_the_label"
    rows = [{"layer": f"node_Conv_{900 + i}", "module": f"{long}.{i}", "op": "Conv", "rank": i + 1,
             "float_alone": {"dice_mean": 0.99, "output_sqnr_db": 35.4 - 0.2 * i},
             "quantized_alone": {"dice_mean": 0.99, "output_sqnr_db": 36.6 + 0.1 * i, "activation_sqnr_db": 30.0}}
            for i in range(n)]
    return {"method": "minmax", "metric": "dice_mean", "frames": 8, "frames_note": "first 8 of 40 frames",
            "full_int8": {"dice_mean": 0.99, "output_sqnr_db": 33.3}, "layers_in_float_by_rule": [], "seconds": 1.0,
            "layers": rows}


def test_chart_labels_are_whole_and_fit_and_the_axis_spans_the_values(tmp_path):
    import matplotlib.pyplot as plt

    from pocus_edge.export.sensitivity import FILES, figure, label, write_report

    report = _report()
    fig = figure(report)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    axes_left = ax.get_window_extent(renderer).x0
    texts = [t.get_text() for t in ax.get_yticklabels()]
    assert set(texts) == {label(r) for r in report["layers"]}  # whole: module path not cut to its last characters
    for tick in ax.get_yticklabels():
        box = tick.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= axes_left + 1, (tick.get_text(), box, axes_left)
    low, high = ax.get_xlim()
    assert 30 < low < 33.3 and 36.6 + 1.1 < high  # old: from 0 dB
    assert "SQNR" in ax.get_xlabel() and "dB" in ax.get_xlabel()
    plt.close(fig)
    assert FILES[2] in write_report(tmp_path, report) and (tmp_path / FILES[2]).stat().st_size > 1000


def test_a_layer_named_by_its_module_path_is_not_repeated():
    from pocus_edge.export.sensitivity import _markdown, label

    row = {"layer": "decoder.blocks.3.conv1.0", "module": "decoder.blocks.3.conv1.0"}
    assert label(row) == "decoder.blocks.3.conv1.0"
    assert label({"layer": "node_Conv_8", "module": "block.0"}) == "node_Conv_8 (block.0)"
    report = _report(1)
    report["layers"][0].update(layer="decoder.blocks.3.conv1.0", module="decoder.blocks.3.conv1.0")
    assert "| 1 | `decoder.blocks.3.conv1.0` | - | Conv |" in _markdown(report)


def test_the_frames_the_report_scores_are_spread_over_the_held_out_set():
    """The report and the layer ranking score the first EXPLAIN_FRAMES search frames; those must span the set (in
    file-name order BUSI's first frames are all benign), and the whole set must stay, each frame once."""
    from pocus_edge.export.quantize import EXPLAIN_FRAMES, search_frames

    names = [f"benign_{i:03d}" for i in range(40)] + [f"malignant_{i:03d}" for i in range(15)]
    names += [f"normal_{i:03d}" for i in range(4)]
    order = search_frames(names)
    assert sorted(order) == sorted(names) and len(order) == len(names)
    first = order[:EXPLAIN_FRAMES]
    assert first[0] == names[0] and first[-1] == names[-1]
    assert {n.split("_")[0] for n in first} == {"benign", "malignant", "normal"}
    assert search_frames(names[:3]) == names[:3] and search_frames([]) == []
