"""TFLite int8 (PT2E) mixed precision: layers named by module path, really float in the .tflite, found by the search.

The fragile network (tests/test_quant_mixed.py) has one 1x1 convolution reading a tensor with one huge-range channel:
per-tensor int8 of that input erases the other channels. The automatic search must keep exactly that module in
float; the written .tflite must then hold one float32 CONV_2D (float weights, DEQUANTIZE before it) and int8
convolutions elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pocus_edge.errors import ConfigError
from tests.test_quant_mixed import SIZE, Fragile, fragile  # noqa: F401 - the fixture: MODEL -> Fragile

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.usefixtures("fragile")  # export() resolves any MODEL to the fragile network


def _export(tmp_path, name, phantom_dir, **options):
    from pocus_edge.export import export

    return export("fragile", "tflite", "int8", tmp_path / name, image_size=SIZE, calib_data=phantom_dir, **options)


def _conv_types(path) -> list[tuple[str, str]]:
    """(input dtype, weight dtype) of each CONV_2D op of a .tflite, in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only op list the Python wheel exposes
    return [(dtypes[o["inputs"][0]], dtypes[o["inputs"][1]]) for o in ops if o["op_name"] == "CONV_2D"]


def test_quantizer_leaves_the_float_modules_unannotated():
    from pocus_edge.export.tflite import int8_quantizer
    from pocus_edge.export.tflite_mixed import layer_names, module_path

    graph = torch.export.export(Fragile().eval(), (torch.zeros(1, 3, SIZE, SIZE),)).module()
    assert layer_names(graph) == ["stem", "body", "fragile", "head"]
    int8_quantizer(float_layers=["fragile"]).annotate(graph)
    convs = {module_path(n): n.meta.get("quantization_annotation") for n in graph.graph.nodes
             if n.target == torch.ops.aten.conv2d.default}
    assert convs["fragile"] is None  # old quantiser: every conv annotated
    assert all(convs[m] is not None for m in ("stem", "body", "head"))


def test_search_keeps_the_fragile_module_in_float_and_the_tflite_computes_it_in_float(tmp_path, phantom_dir):
    from pocus_edge.runtime import verify_bundle

    manifest = _export(tmp_path, "mixed", phantom_dir, explain=True)
    bundle = tmp_path / "mixed"
    verify_bundle(bundle)
    options = manifest["target_options"]
    assert options["float_layers"] == ["fragile"] and options["calibration_method"] == "histogram"
    mixed = options["mixed_precision"]
    assert mixed["result"] == "target met" and mixed["full_int8"]["dice_mean"] < 0.95 <= mixed["mixed"]["dice_mean"]
    # the converted .tflite is scored too (LiteRT, not the PyTorch simulation): it misses before and passes after
    assert mixed["full_int8_converted"]["dice_mean"] < 0.95 <= mixed["mixed_converted"]["dice_mean"]
    assert mixed["steps"][0]["layer"] == "fragile" and mixed["steps"][0]["kept"] is True
    assert mixed["latency_ms"]["full_int8"] > 0 and mixed["latency_ms"]["mixed"] > 0
    assert manifest["parity"]["status"] == "passed" and manifest["parity"]["metrics"]["dice_mean"] >= 0.95
    # the .tflite: the fragile conv (third of four) reads float input with float weights; so does `body`, whose
    # output only `fragile` reads (it stays float so fragile reads it unrounded), and the manifest says so
    assert _conv_types(bundle / "model.tflite") == [("int8", "int8"), ("float32", "float32"), ("float32", "float32"),
                                                     ("int8", "int8")]
    assert mixed["float_compute_also"] == ["body"]
    report = json.loads((bundle / "quant_report.json").read_text())
    assert [r["layer"] for r in report["layers"]][0] == "fragile" and len(report["layers"]) == 4
    assert report["layers"][0]["quantized_alone"]["activation_sqnr_db"] < 10 < \
        report["layers"][1]["quantized_alone"]["activation_sqnr_db"]
    assert "| 1 | `fragile` | - | conv2d |" in (bundle / "quant_report.md").read_text()


def test_forced_float_layer_by_module_path(tmp_path, phantom_dir):
    manifest = _export(tmp_path, "forced", phantom_dir, float_layers="body", parity_thresholds={
        "dice_mean": 0.0, "dice_min": 0.0, "prob_abs_diff_mean": 1.0})
    assert manifest["target_options"]["float_layers"] == ["body"]
    assert manifest["target_options"]["mixed_precision"]["mode"] == "forced with --float-layers"
    assert [c[1] for c in _conv_types(tmp_path / "forced" / "model.tflite")] == ["float32", "float32", "int8", "int8"]
    assert manifest["target_options"]["mixed_precision"]["float_compute_also"] == ["stem"]


def test_search_works_with_channels_last_io(tmp_path, phantom_dir):
    """--nhwc wraps the model in litert-torch's channel-last module (forward(*args)); the search captures it with a
    dynamic batch like any other model (it once failed: dynamic_shapes keyed by the signature, not the tensor)."""
    manifest = _export(tmp_path, "nhwc", phantom_dir, nhwc=True)
    assert manifest["inputs"][0]["layout"] == "NHWC" and manifest["inputs"][0]["shape"] == [1, SIZE, SIZE, 3]
    assert manifest["target_options"]["float_layers"] == ["fragile"]
    assert manifest["parity"]["status"] == "passed"
    mixed = manifest["target_options"]["mixed_precision"]  # NHWC outputs scored along the right axis when converted
    assert mixed["full_int8_converted"]["dice_mean"] < 0.95 <= mixed["mixed_converted"]["dice_mean"]


@pytest.mark.parametrize("options,message", [
    ({"float_layers": "decoder.blocks.9"}, r"--float-layers decoder.blocks.9: not a quantisable layer of this model's "
                                           r"TFLite model .*4 layers named like stem, body, fragile"),
    ({"float_layers": "body", "io": "float"}, r"--float-layers: tflite int8 keeps layers in float only with --io int8"),
    ({"explain": True, "io": "float"}, r"--explain: .*--io float \(ai-edge-quantizer\)"),
])
def test_refusals_name_the_option_and_the_valid_layers(tmp_path, phantom_dir, options, message):
    with pytest.raises(ConfigError, match=message):
        _export(tmp_path, "x", phantom_dir, **options)
    assert not (tmp_path / "x").exists()


def test_io_float_turns_the_default_search_off_and_says_so():
    from pocus_edge.export.targets import resolve_options
    from pocus_edge.export.tflite import preflight

    options = resolve_options("tflite", "int8", {"calib_data": "frames/", "io": "float"})
    assert options["mixed_precision"] is True
    preflight(options)
    assert options["mixed_precision"] is False


def _bare_job(module, calibration):
    """A TfliteInt8Job with only what calibration needs (no export request): the captured graph and frames."""
    from pocus_edge.export.progress import ExportProgress
    from pocus_edge.export.tflite_mixed import TfliteInt8Job, capture, layer_names

    job = TfliteInt8Job.__new__(TfliteInt8Job)
    job.captured = capture(module.eval(), torch.from_numpy(calibration[0]))
    job.layers, job.calibration, job.progress = layer_names(job.captured), calibration, ExportProgress.silent()
    job._stats, job._recorder, job._full = {}, None, None
    return job


# U-Nets: concatenations share one observer; EfficientNet: observers watch observers, sigmoid has fixed ranges
@pytest.mark.parametrize("arch", ["fragile", "resnet18", "efficientnet_b0"])
def test_one_calibration_pass_for_all_variants_gives_the_states_of_one_pass_each(arch, monkeypatch):
    from pocus_edge.export import tflite_mixed
    from pocus_edge.models.registry import create_model

    torch.manual_seed(0)
    module = Fragile() if arch == "fragile" else create_model("segmentation", arch, 1, None)
    rng = np.random.default_rng(0)
    frames = [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(tflite_mixed.CALIB_BATCH + 3)]
    shared, own = _bare_job(module, frames), _bare_job(module, frames)
    passes = []
    real = tflite_mixed._feed_observers
    monkeypatch.setattr(tflite_mixed, "_feed_observers", lambda *a: passes.append(1) or real(*a))
    layers = shared.layers[:: max(1, len(shared.layers) // 4)]  # U-Net: 5 of its 30 layers, first and last kept
    layers = list(dict.fromkeys([*layers, shared.layers[-1]]))
    variants = [([layer], None) for layer in layers] + [([], [layer]) for layer in layers]
    assert shared.precalibrate(variants) > 0 and len(passes) == 2  # one pass (2 calls: 8 + 3), not one per variant
    x = torch.from_numpy(rng.random((1, 3, SIZE, SIZE), dtype=np.float32))
    for floats, only in variants:
        a, b = shared._variant(floats, only).model, own._variant(floats, only).model  # b: its own pass
        with torch.no_grad():
            assert torch.equal(a(x), b(x)), (floats, only)


def test_a_dropped_variant_is_freed():
    """torchao and torch cache a device lookup per model (functools.cache), which kept every per-layer variant of
    the search and the report alive: a 256-px U-Net-ResNet50 --explain was killed at 24 GB."""
    import gc
    import weakref

    rng = np.random.default_rng(0)
    job = _bare_job(Fragile(), [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(2)])
    job.full()
    variant = job._variant(["fragile"])
    prepared, _ = job._prepare(["body"])
    refs = [weakref.ref(variant.model), weakref.ref(prepared)]
    del variant, prepared
    gc.collect()
    assert [r() for r in refs] == [None, None]
