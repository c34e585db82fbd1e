"""QDQ graph work for int8 ONNX: which nodes are layers, quantising from a cached calibration, keeping layers in
float, and running/timing variants with ONNX Runtime.

A *layer* is a weight-bearing compute node (Conv, ConvTranspose, Gemm, MatMul). Keeping a layer in float means it
computes in float32 on float32 inputs with its original float weights. ONNX Runtime's `nodes_to_exclude` alone does
not give that: a tensor quantised for a neighbour is re-wired to its DequantizeLinear output for *every* consumer
(and a ReLU may be folded into the quantiser). `keep_float` therefore gives each float layer exactly the inputs
it has in the float graph (re-inserting a folded ReLU/Clip) and drops the Q/DQ pairs nobody reads any more.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .base import ExportError

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FOLDED_ACTIVATIONS = ("Relu", "Clip")  # ORT folds these into the quantiser of the tensor before them
MODULE_KEY = "pocus.module"  # node metadata: the PyTorch module a node came from (set in onnx.py)
log = logging.getLogger(__name__)


def layers(model) -> list[str]:
    """Names of the layer nodes in graph order."""
    return [n.name for n in model.graph.node if n.op_type in LAYER_OPS]


def module_names(model) -> dict[str, str]:
    """{node name: PyTorch module path} where the exporter recorded it."""
    return {n.name: p.value for n in model.graph.node for p in n.metadata_props if p.key == MODULE_KEY}


def quantize(prepared: Path, dst: Path, cache: Path, method: str, symmetric: bool, exclude: list[str],
             only: list[str] | None = None) -> None:
    """quantize_static from the calibration cache (no calibration run); `only`: quantise just these nodes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    kinds = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    with contextlib.redirect_stdout(sys.stderr), _quiet_ort_logging():
        quantize_static(str(prepared), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=kinds[method], nodes_to_exclude=exclude,
                        nodes_to_quantize=only, extra_options=extra, calibration_cache_path=str(cache))


@contextlib.contextmanager
def _quiet_ort_logging():
    """quantize_static warns 'run pre-processing' through the root logger on every call; the graph was."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def keep_float(qdq, fp32, names: list[str]):
    """A copy of the QDQ model in which the layers `names` read their float-graph inputs (float weights too)."""
    model = copy.deepcopy(qdq)
    fp = _FloatGraph(fp32)
    for name in names:
        nodes = list(model.graph.node)
        index = next((i for i, n in enumerate(nodes) if n.name == name), None)
        if index is None or name not in fp.node:
            raise ExportError(f"cannot keep {name!r} in float: no such node in the quantised graph")
        pending: list = []
        inputs = [fp.source(model, t, pending) for t in fp.node[name].input]
        del nodes[index].input[:]
        nodes[index].input.extend(inputs)
        nodes[index:index] = pending
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    _drop_unread(model)
    return model


class _FloatGraph:
    """The float graph's nodes, producers and initializers, to find a tensor's float value in a QDQ graph."""

    def __init__(self, fp32) -> None:
        self.node = {n.name: n for n in fp32.graph.node}
        self.producer = {o: n for n in fp32.graph.node for o in n.output}
        self.init = {i.name: i for i in fp32.graph.initializer}

    def source(self, model, tensor: str, pending: list) -> str:
        """The name under which `tensor`'s float-graph value exists in `model`; nodes to add go to `pending`."""
        graph = model.graph
        if not tensor or tensor in {i.name for i in graph.input}:
            return tensor
        producer = {o: n for n in [*graph.node, *pending] for o in n.output}.get(tensor)
        if tensor in self.init:
            if tensor in {i.name for i in graph.initializer}:
                return tensor
            name = tensor if producer is None else f"{tensor}_float"  # a DequantizeLinear may now own the name
            if name not in {i.name for i in graph.initializer}:
                init = copy.deepcopy(self.init[tensor])
                init.name = name
                graph.initializer.append(init)
            return name
        original = self.producer[tensor]
        if producer is not None and producer.name == original.name:
            return tensor
        if producer is not None and original.op_type in FOLDED_ACTIVATIONS:
            # ORT removed this ReLU/Clip and renamed its input to `tensor`: recompute it in float for this layer
            restored = copy.deepcopy(original)
            restored.name = f"{original.name}_float"
            restored.output[0] = f"{tensor}_float"
            if any(restored.output[0] in n.output for n in [*graph.node, *pending]):
                return restored.output[0]
            restored.input[0] = tensor
            for i in range(1, len(restored.input)):
                restored.input[i] = self.source(model, original.input[i], pending)
            pending.append(restored)
            return restored.output[0]
        raise ExportError(f"cannot keep the layer reading {tensor!r} in float: the quantised graph changed its "
                          "producer")


def _drop_unread(model) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def session(model, threads: int = 1):
    """An ORT CPU session for a ModelProto or a path."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def run(model, frames: list[np.ndarray], threads: int = 1, outputs: list[str] | None = None) -> list[np.ndarray]:
    """Each requested output (default: the first) stacked over `frames` (1 x C x H x W each)."""
    sess = session(model, threads)
    name = sess.get_inputs()[0].name
    wanted = outputs or [sess.get_outputs()[0].name]
    got = [sess.run(wanted, {name: x}) for x in frames]
    return [np.concatenate([g[k] for g in got]) for k in range(len(wanted))]


def latency_ms(path: Path, frame: np.ndarray, runs: int = 5, threads: int = 1) -> float:
    """Median latency of `runs` timed runs after one warm-up, at `threads` threads."""
    sess = session(path, threads)
    feed = {sess.get_inputs()[0].name: frame}
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 3)


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB (capped at 120 dB for identical signals)."""
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise <= signal * 1e-12:
        return 120.0
    return round(10 * np.log10(max(signal, 1e-30) / noise), 3)


def with_probe(model, fp32, layer: str) -> tuple[Any, str, str]:
    """`model` plus a float copy of `layer` fed with its float-graph inputs, both outputs exposed:
    (model, the layer's output as its consumers read it, the float reference)."""
    import onnx

    model = copy.deepcopy(model)
    graph = model.graph
    fp = _FloatGraph(fp32)
    out = fp.node[layer].output[0]
    read = next((n.output[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == out), None)
    seen = next((n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == read), out)
    probe = copy.deepcopy(fp.node[layer])
    probe.name = f"{layer}_probe"
    probe.output[0] = f"{out}_probe"
    pending: list = []
    inputs = [fp.source(model, t, pending) for t in fp.node[layer].input]
    del probe.input[:]
    probe.input.extend(inputs)
    graph.node.extend([*pending, probe])
    names = {o.name for o in graph.output}
    for name in (seen, probe.output[0]):
        if name not in names:
            graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model, seen, probe.output[0]
