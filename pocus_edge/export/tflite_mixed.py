"""TFLite int8 (PT2E) mixed precision: layers named by their PyTorch module path, kept in float, scored in PyTorch.

A *layer* is a convolution or linear module of the model, named by its module path (`decoder.blocks.3.conv1.0`),
the name `--float-layers` takes and the sensitivity report shows. Keeping it in float: the PT2E quantiser leaves
every graph node inside that module unannotated, so litert-torch writes DEQUANTIZE -> float32 op (float weights)
-> QUANTIZE where its neighbours are int8 (tests/test_tflite_mixed.py checks the .tflite's tensor types). Like
the ONNX fallback, a float layer reads its input unrounded: where only float layers read a tensor, its producer
writes it in float (`read_in_float`), so that producer computes in float on its int8-rounded inputs and weights.

The search (quantize_mixed.py) scores candidates without converting each one to .tflite: a candidate is the PT2E
model after `convert_pt2e`, the graph litert-torch lowers, run in PyTorch (quantise/dequantise around float ops)
on the held-out search frames. Calibration runs once: an observer of a candidate of the same kind as one already
calibrated, watching exactly the same tensors, takes that one's state; `precalibrate` calibrates the new observers
of many candidates (one per layer, for the ranking and the report) in one pass; a candidate with any other observer
is calibrated on all the frames itself. Only the shipped model and the two timed ones are converted.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

METHOD = "histogram"  # litert-torch's symmetric config: HistogramObserver activations, min-max per-channel weights
LAYER_OPS = ("conv1d.default", "conv2d.default", "convolution.default", "conv_transpose2d.input", "linear.default")
TIMED_RUNS = 5
SCORE_BATCH = 8  # frames per call when scoring candidates
# frames per calibration call: a HistogramObserver re-bins its histogram at every call, a cost that does not grow
# with the batch, so calibrating 8 frames a call is several times faster; its histogram still covers every value
CALIB_BATCH = 8


def _targets() -> set:
    return {getattr(getattr(torch.ops.aten, op), overload) for op, overload in (t.split(".") for t in LAYER_OPS)}


def module_path(node: torch.fx.Node) -> str:
    """The innermost module a graph node was traced in ('' for none)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def layer_names(graph: torch.fx.GraphModule) -> list[str]:
    """Module paths of the convolution/linear nodes, in graph order (a module called twice is one layer)."""
    targets = _targets()
    names = [module_path(n) for n in graph.graph.nodes if n.op == "call_function" and n.target in targets]
    return list(dict.fromkeys(n for n in names if n))


def strip_wrapper(graph: torch.fx.GraphModule, prefix: str) -> None:
    """Rewrite the module paths the graph's nodes record so that a wrapper's child `prefix` (litert-torch's
    channel-last wrapper calls the model `wrapped`) is not part of any layer name: --float-layers and the reports
    use the model's own paths with or without --nhwc."""
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            node.meta["nn_module_stack"] = {
                key: ("" if path == prefix else path.removeprefix(prefix + "."), kind)
                for key, (path, kind) in stack.items()}


def in_layers(node: torch.fx.Node, names: set[str]) -> bool:
    """Whether `node` was traced inside one of the modules `names`."""
    return any(path in names for path, _ in (node.meta.get("nn_module_stack") or {}).values())


def node_filter(float_layers: list[str] | tuple[str, ...] = (), only: list[str] | None = None):
    """The annotation filter: nodes of `float_layers` stay float; with `only`, every compute node outside it too
    (weights and other get_attr nodes carry no module stack and pass)."""
    floats, keep = set(float_layers), set(only or ())
    if not floats and only is None:
        return None

    def annotate(node: torch.fx.Node) -> bool:
        if node.op != "call_function":
            return True
        return not in_layers(node, floats) and (only is None or in_layers(node, keep))

    return annotate


def read_in_float(model: torch.fx.GraphModule, float_layers: list[str] | tuple[str, ...]) -> list[str]:
    """Drop, in place, the output quantisation of tensors that only float layers read, so those layers read the
    float value (not an int8-rounded one); the producer then computes in float too (on its int8-rounded input and
    weights). Returns the layers computing those tensors (a layer behind a ReLU too; else the node's name)."""
    floats = set(float_layers)
    changed = []
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in _targets() or not in_layers(node, floats):
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or not all(in_layers(u, floats) for u in source.users):
            continue
        annotation = source.meta.get("quantization_annotation")
        if annotation is not None and annotation.output_qspec is not None:
            annotation.output_qspec = None
            changed.append(_writer(source))
    return changed


def _writer(node: torch.fx.Node, steps: int = 3) -> str:
    """The layer whose output `node` is, through up to `steps` one-input ops (ReLU, BatchNorm); else its name."""
    current = node
    for _ in range(steps + 1):
        if current.target in _targets() and module_path(current):
            return module_path(current)
        if current.op != "call_function" or not current.args or not isinstance(current.args[0], torch.fx.Node):
            break
        current = current.args[0]
    return node.name


def in_eval(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`graph` (torch.export / PT2E) in eval mode for models.inference.torch_outputs: torchao's move to eval (the
    dropout and BatchNorm ops) and the nn.Module flag, which an exported graph refuses to set through .eval()."""
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(graph)
    graph.training = False
    return graph


# functools.cache'd device lookups that keep every model they see alive (torchao PR 2983, PyTorch PR 162550)
DEVICE_CACHES = (("torchao.utils", "_assert_and_get_unique_device"),
                 ("torch.ao.quantization.fx.utils", "assert_and_get_unique_device"))


def forget_cached_models() -> None:
    """Empty the DEVICE_CACHES: prepare_pt2e and convert_pt2e add every model they see to them, so each
    per-layer variant of the search and the report stayed in memory (a 256-px U-Net-ResNet50 report grew about
    130 MB per variant until the kernel killed it at 24 GB)."""
    import importlib

    for module, name in DEVICE_CACHES:
        cached = getattr(importlib.import_module(module), name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def _is_observer(graph: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    from torchao.quantization.pt2e.observer import ObserverBase

    return node.op == "call_module" and isinstance(graph.get_submodule(node.target), ObserverBase)


def _observer_calls(prepared: torch.fx.GraphModule) -> dict[str, list[str]]:
    """{observer: the graph tensors it is called on, in graph order}. An observer is one module *instance*, named
    by the first of its names: PT2E registers a shared one (a concatenation and its inputs) under several names,
    and its state is over all the tensors of the group, which changes when a float layer leaves the group."""

    def tensor(node: torch.fx.Node) -> str:  # an observer may watch another's output: the same value
        while _is_observer(prepared, node):
            node = node.args[0]
        return node.name

    calls: dict[str, list[str]] = {}
    first: dict[int, str] = {}
    for node in prepared.graph.nodes:
        if _is_observer(prepared, node):
            module = prepared.get_submodule(node.target)
            calls.setdefault(first.setdefault(id(module), node.target), []).append(tensor(node.args[0]))
    return calls


def _observer_key(module: torch.nn.Module, calls: list[str]) -> tuple:
    """What an observer's calibrated state depends on: its kind and settings, and the tensors it watches (a
    fixed-range observer and a histogram one may watch the same tensor)."""
    kind = tuple(str(getattr(module, a, None)) for a in ("dtype", "qscheme", "ch_axis", "quant_min", "quant_max"))
    return (type(module).__name__, *kind, tuple(sorted(set(calls))))


def _observers(prepared: torch.fx.GraphModule) -> dict[str, tuple]:
    """{observer (instance, by its first name): its _observer_key}."""
    return {k: _observer_key(prepared.get_submodule(k), v) for k, v in _observer_calls(prepared).items()}


def _feed_observers(prepared: torch.fx.GraphModule, x: torch.Tensor,
                    need: list[tuple[torch.nn.Module, list[str]]]) -> None:
    """Run `prepared` on `x` with its own observers skipped (PT2E calibration runs the float graph; observers only
    watch, so these are the values any variant's observers see) and call each observer of `need` on its tensors,
    in its own call order, as soon as the last of them is computed. A tensor is held (a copy: an in-place op
    later, relu_, would change it) only until every observer watching it has been called, so memory stays that of
    a forward pass plus the inputs of shared observers (a concatenation's), not every watched activation."""
    watchers: dict[str, list[int]] = {}
    for i, (_, calls) in enumerate(need):
        for name in set(calls):
            watchers.setdefault(name, []).append(i)
    missing = [len(set(calls)) for _, calls in need]
    readers = {name: len(who) for name, who in watchers.items()}
    held: dict[str, torch.Tensor] = {}

    class Feeder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            if _is_observer(prepared, n):
                return self.env[n.args[0]]
            value = super().run_node(n)
            if n.name in watchers:
                held[n.name] = value.clone()
                for i in watchers[n.name]:
                    missing[i] -= 1
                    if missing[i]:
                        continue
                    observer, calls = need[i]
                    for name in calls:
                        observer(held[name])
                    for name in set(calls):
                        readers[name] -= 1
                        if not readers[name]:
                            del held[name]
            return value

    with torch.no_grad():
        Feeder(prepared).run(x)


def capture(module: torch.nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The eval-mode exported graph of `module` for any batch size: scoring and calibration run several frames a
    call, the .tflite one. Traced from a batch of 2 (a batch of 1 would be specialised), with the dynamic shape
    keyed by the tensor, not by the signature: --nhwc wraps the model in litert-torch's channel-last module,
    whose forward takes *args."""
    pair = torch.cat([example, example])
    batch = torch.export.ShapesCollection()
    batch[pair] = {0: torch.export.Dim("batch", min=1, max=1024)}
    return in_eval(torch.export.export(module, (pair,), dynamic_shapes=batch).module())


class TfliteInt8Job:
    """The quantize_mixed.Int8Job interface for the TFLite PT2E int8 path (see the module docstring)."""

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, request, thresholds: dict[str, list],
                 scratch: Path, calibration: list[np.ndarray], eval_frames: list[np.ndarray]) -> None:
        from .progress import progress_of
        from .quantize import PRIMARY, postprocessing
        from .tflite import channels_last_output

        self.example, self.scratch, self.thresholds = example, scratch, thresholds
        self.task, self.post, self.primary = request.spec.task, postprocessing(request), PRIMARY[request.spec.task]
        self.channels_last = channels_last_output(request)  # scored as N x C x H x W, like every other target
        self.progress = progress_of(request)
        self.captured = capture(module, example)
        if module is not request.model:  # --nhwc: the wrapper's one child is the model
            strip_wrapper(self.captured, next(n for n, child in module.named_children() if child is request.model))
        self.layers = layer_names(self.captured)
        self.rule_float: list[str] = []
        self.modules = {n: n for n in self.layers}
        self.caches = {METHOD: None}
        self.graph_kind = "TFLite model (a convolution/linear module path)"
        self.calibration, self.eval_frames = calibration, eval_frames
        self.reference = self._run(self.captured, eval_frames) if eval_frames else None
        self._stats: dict[tuple, dict] = {}  # _observer_key -> calibrated observer state
        self._recorder: torch.fx.GraphModule | None = None  # set with the full model's calibration
        self._full = None

    def _run(self, model, frames: list[np.ndarray]) -> np.ndarray:
        """`model` on prepared inputs (1 x C x S x S each, or NHWC for --nhwc), SCORE_BATCH at a time (the
        simulated int8 graph's quantise/dequantise ops cost mostly per call): not gray frames, so not
        frame_outputs."""
        from ..models.inference import torch_outputs

        out = np.concatenate([torch_outputs(model, np.concatenate(frames[i:i + SCORE_BATCH]))
                              for i in range(0, len(frames), SCORE_BATCH)])
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if self.channels_last else out

    def _prepare(self, float_layers: list[str], only: list[str] | None = None):
        """(PT2E-prepared copy of the model with `float_layers` left in float, its quantiser)."""
        from torchao.quantization.pt2e import quantize_pt2e

        from .tflite import int8_quantizer

        quantizer = int8_quantizer(float_layers=float_layers, only=only)
        prepared = quantize_pt2e.prepare_pt2e(copy.deepcopy(self.captured), quantizer)
        forget_cached_models()
        return prepared, quantizer

    def precalibrate(self, variants: list[tuple[list[str], list[str] | None]]) -> int:
        """Calibrate, in ONE pass over the calibration frames, every observer the (float_layers, only) `variants`
        add to those of full int8, so that building each variant after this reuses states instead of running
        all frames through it (the ranking and the report build one variant per layer). Exact: an observer's
        state depends only on the float values it is called on, in order, which are the same in every variant.
        Returns how many new observers were calibrated (those watching a tensor the full graph lacks are left
        to _variant's own pass)."""
        self.full()
        need: dict[tuple, tuple[torch.nn.Module, list[str]]] = {}
        for floats, only in variants:
            prepared, _ = self._prepare(list(floats), only)
            for module, calls in _observer_calls(prepared).items():
                key = _observer_key(prepared.get_submodule(module), calls)
                if key not in self._stats and key not in need:
                    need[key] = (copy.deepcopy(prepared.get_submodule(module)), calls)
        assert self._recorder is not None  # full() calibrated the shared states
        present = {n.name for n in self._recorder.graph.nodes}
        need = {k: v for k, v in need.items() if set(v[1]) <= present}
        if not need:
            return 0
        self.progress.stage(f"calibrate the {len(need)} new observers of {len(variants)} variants "
                            f"({len(self.calibration)} frames, one pass)", len(self.calibration))
        observers = list(need.values())
        for x in self._calibration_calls(counted=True):
            _feed_observers(self._recorder, x, observers)
        for key, (observer, _) in need.items():
            self._stats[key] = copy.deepcopy(observer.state_dict())
        return len(need)

    def _calibration_calls(self, counted: bool):
        """The calibration frames, CALIB_BATCH a call, in one fixed order (every pass must see the same batches for
        precalibrate to be exact); `counted` advances the current progress stage by the frames of each."""
        for i in range(0, len(self.calibration), CALIB_BATCH):
            batch = self.calibration[i:i + CALIB_BATCH]
            yield torch.from_numpy(np.concatenate(batch))
            if counted:
                self.progress.advance(len(batch))

    def _variant(self, float_layers: list[str], only: list[str] | None = None):
        """The calibrated, converted PT2E model (and its quantiser) with `float_layers` left in float."""
        from torchao.quantization.pt2e import quantize_pt2e

        prepared, quantizer = self._prepare(float_layers, only)
        watched = _observers(prepared)
        if not self._stats or any(w not in self._stats for w in watched.values()):
            shared = not self._stats and not float_layers and only is None  # the full model: the shared states
            with torch.no_grad():
                for x in self._calibration_calls(counted=shared):
                    prepared(x)
            if shared:
                self._stats = {w: copy.deepcopy(prepared.get_submodule(m).state_dict()) for m, w in watched.items()}
                self._recorder = copy.deepcopy(prepared)  # the float graph whose tensors precalibrate records
        else:
            for m, w in watched.items():
                prepared.get_submodule(m).load_state_dict(self._stats[w])
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        forget_cached_models()
        converted.training = False  # traced from the eval model (no dropout/BatchNorm to move): for torch_outputs
        return SimpleNamespace(model=converted, quantizer=quantizer, floats=list(float_layers), path=None)

    def full(self, method: str = METHOD):
        if self._full is None:
            self._full = self._variant([])
        return self._full

    def mixed(self, method: str, float_layers: list[str]):
        self.full(method)  # calibrates once and keeps the observer states
        return self._variant(list(float_layers)) if float_layers else self._full

    def score(self, variant, count: int | None = None) -> dict[str, float]:
        """Parity metrics of `variant` (simulated int8, PyTorch) against fp32 on the first `count` frames."""
        from .parity import compare
        from .quantize_graph import sqnr_db

        frames = self.eval_frames[:count] if count else self.eval_frames
        out, ref = self._run(variant.model, frames), self.reference[:len(frames)]
        return {**compare(self.task, ref, out, self.post), "output_sqnr_db": sqnr_db(ref, out)}

    def passes(self, metrics: dict[str, float]) -> bool:
        from .parity import judge

        return not judge(metrics, self.thresholds)

    def op(self, layer: str) -> str:
        """The aten op of `layer` (conv2d, linear, ...)."""
        targets = _targets()
        node = next(n for n in self.captured.graph.nodes if n.op == "call_function" and n.target in targets
                    and module_path(n) == layer)
        return str(node.target).split(".")[-2]

    def alone(self, method: str, layer: str, count: int) -> tuple[dict[str, float], float]:
        """(metrics with only `layer` quantised, SQNR of that layer's output as its consumers read it)."""
        from .quantize_graph import sqnr_db

        self.full(method)  # the shared observer states
        variant = self._variant([], only=[layer])
        targets = _targets()
        node = next(n for n in variant.model.graph.nodes if n.op == "call_function" and n.target in targets
                    and module_path(n) == layer)
        seen = node
        for _ in range(2):  # conv -> quantize -> dequantize: the value the next op reads
            users = [u for u in seen.users if "quantize" in str(u.target)]
            seen = users[0] if len(users) == 1 else seen
        frames = self.eval_frames[:count]
        act = _node_values(variant.model, frames, seen.name)
        ref = _node_values(self.captured, frames, node.name)
        return self.score(variant, count), sqnr_db(ref, act)

    def converted(self, variant) -> Path:
        """The .tflite of `variant`, converted once into the scratch folder."""
        import litert_torch
        from litert_torch.quantize import quant_config

        if variant.path is None:
            variant.path = self.scratch / f"variant-{len(list(self.scratch.glob('variant-*')))}.tflite"
            in_eval(variant.model)  # captured from the eval model; litert-torch reads only the flag, to warn
            config = quant_config.QuantConfig(pt2e_quantizer=variant.quantizer)
            litert_torch.convert(variant.model, (self.example,), quant_config=config).export(str(variant.path))
        return variant.path

    def write(self, variant, path: Path) -> None:
        """The .tflite of `variant` at `path`."""
        if path != self.converted(variant):
            shutil.copyfile(variant.path, path)

    def score_converted(self, variant, count: int | None = None) -> dict[str, float]:
        """Parity metrics of `variant` as it ships: converted to .tflite and run by LiteRT (XNNPACK kernels), which
        can differ from `score`'s PyTorch simulation of the same int8 graph (session 8 BUSI U-Net: 0.974 simulated,
        0.981 converted)."""
        from ..runtime.backends.tflite_backend import TfliteBackend
        from ..runtime.preprocess import dequantize, quantize
        from .parity import compare
        from .quantize_graph import sqnr_db

        backend = TfliteBackend(self.converted(variant), threads=None)
        (in_scale, in_zero), (out_scale, out_zero) = backend.input["quantization"], backend.output["quantization"]
        dtype = np.dtype(backend.input["dtype"]).name
        frames = self.eval_frames[:count] if count else self.eval_frames
        outs = []
        for frame in frames:
            x = quantize(frame, in_scale, in_zero, dtype) if in_scale else frame.astype(dtype)
            y = backend.run(x)
            outs.append(dequantize(y, out_scale, out_zero) if out_scale else y.astype(np.float32))
        out = np.concatenate(outs)
        out = np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if self.channels_last else out
        ref = self.reference[:len(frames)]
        return {**compare(self.task, ref, out, self.post), "output_sqnr_db": sqnr_db(ref, out)}

    def timed(self, variant, name: str, threads: int, runs: int = TIMED_RUNS) -> float:
        """Median latency (ms) of the converted `variant` in the LiteRT interpreter at `threads` threads."""
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.converted(variant)), num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1e3, 3)


def _node_values(graph: torch.fx.GraphModule, frames: list[np.ndarray], name: str) -> np.ndarray:
    """The value of graph node `name` for each frame, stacked."""

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            value = super().run_node(n)
            if n.name == name:
                got.append(value.detach().float().numpy().copy())  # a later in-place op (relu_) would change it
            return value

    got: list[np.ndarray] = []
    with torch.no_grad():
        for x in frames:
            Recorder(graph).run(torch.from_numpy(x))
    return np.concatenate(got)
