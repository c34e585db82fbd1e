"""Static int8 quantisation of ONNX models (QDQ format) calibrated on real ultrasound frames, with automatic
mixed precision.

Weights: int8, symmetric, per output channel. Activations: uint8 asymmetric for ONNX Runtime CPU (its fastest
U8S8 kernels), or int8 symmetric for TensorRT's explicit quantisation. Calibration frames go through the
runtime's own pre-processing and stream in chunks (quantize_calib.py): any number of frames in bounded memory.
Methods: minmax (default), entropy, percentile (99.999), or auto (each tried, the best on held-out frames kept).
A final linear layer that writes a graph output (a classifier's logits) stays in float: a few thousand
multiply-adds, and its rounding decides the class.

Mixed precision (on by default): when full int8 misses the accuracy target on the held-out parity frames, the
layers whose float fallback helps most (quantize_mixed.py) stay in float, one at a time, until the target is met
or --max-float-layers is reached (then the export fails with the best agreement reached and the layers tried).
`--float-layers` forces the list; `--explain` writes the per-layer sensitivity report (sensitivity.py).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import ExportError, ExportRequest, require
from .targets import TARGETS

CALIBRATION_METHODS = TARGETS["onnx"].options["calibration_method"].values  # one list: the target table
PRIMARY = {"segmentation": "dice_mean", "classification": "top1_agreement", "embedding": "cosine_mean"}
EXPLAIN_FRAMES = 8  # held-out frames per sensitivity variant
log = logging.getLogger(__name__)


def search_frames(frames: list) -> list:
    """The held-out search frames with EXPLAIN_FRAMES of them, evenly spaced over the whole set, moved first: the
    sensitivity report and the layer ranking score the first EXPLAIN_FRAMES only, and the set comes in file-name
    order (BUSI: every first frame benign). Agreement on the whole set does not depend on the order."""
    n = len(frames)
    first = list(dict.fromkeys(np.linspace(0, n - 1, min(EXPLAIN_FRAMES, n)).round().astype(int).tolist()))
    chosen = set(first)
    return [frames[i] for i in first] + [frames[i] for i in range(n) if i not in chosen]


def calibration_batches(request: ExportRequest) -> list[np.ndarray]:
    """The calibration frames as 1 x C x S x S float32 model inputs."""
    return list(_inputs(request, "calibration"))


def _inputs(request: ExportRequest, which: str) -> Iterator[np.ndarray]:
    from ..runtime.preprocess import normalized_chw

    images = request.calibration if which == "calibration" else request.parity_images
    if which == "calibration" and (images is None or not images.images):
        raise ExportError("int8 needs calibration images: pass --calib-data DIR (real ultrasound frames, ~300)")
    for img in images.images if images is not None else []:
        yield normalized_chw(img, request.preprocessing)[None]


def output_linear_layers(model_path: Path) -> list[str]:
    """Names of Gemm/MatMul nodes whose result is a graph output (e.g. a classifier's logits layer)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and outputs.intersection(n.output)]


@dataclass
class Int8Job:
    """One int8 export: the prepared float graph, its calibrations, the held-out frames and the fp32 pass on them."""

    prepared: Path
    scratch: Path
    task: str
    post: dict[str, Any]  # the model's postprocessing block: activation and threshold for the agreement
    symmetric: bool
    eval_frames: list[np.ndarray]
    thresholds: dict[str, list]
    rule_float: list[str]
    caches: dict[str, Path] = field(default_factory=dict)
    progress: Any = None  # progress.ExportProgress (None: silent)
    _full: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import onnx

        from .quantize_graph import layers, module_names, run

        self.fp32 = onnx.load(str(self.prepared))
        self.layers = [n for n in layers(self.fp32) if n not in self.rule_float]
        self.modules = module_names(self.fp32)
        self.reference = run(self.fp32, self.eval_frames)[0] if self.eval_frames else None  # the one fp32 pass

    @property
    def primary(self) -> str:
        return PRIMARY[self.task]

    def full(self, method: str):
        """The full int8 model (rule-float layers excepted) for a calibrated method."""
        import onnx

        from .quantize_graph import quantize

        if method not in self._full:
            path = self.scratch / f"full-{method}.onnx"
            quantize(self.prepared, path, self.caches[method], method, self.symmetric, self.rule_float)
            self._full[method] = onnx.load(str(path))
        return self._full[method]

    def mixed(self, method: str, float_layers: list[str]):
        from .quantize_graph import keep_float

        return keep_float(self.full(method), self.fp32, float_layers) if float_layers else self.full(method)

    def score(self, model, count: int | None = None) -> dict[str, float]:
        """Parity metrics of `model` against the fp32 graph on the first `count` held-out frames, + output SQNR."""
        from .parity import compare
        from .quantize_graph import run, sqnr_db

        frames = self.eval_frames[:count] if count else self.eval_frames
        out = run(model, frames)[0]
        ref = self.reference[:len(frames)]
        return {**compare(self.task, ref, out, self.post), "output_sqnr_db": sqnr_db(ref, out)}

    def passes(self, metrics: dict[str, float]) -> bool:
        from .parity import judge

        return not judge(metrics, self.thresholds)


def postprocessing(request: ExportRequest) -> dict[str, Any]:
    """The model's postprocessing block (its card's activation and threshold): what int8 agreement is judged by."""
    from ..runtime.postprocess import postprocessing_for

    return postprocessing_for(request.spec.task, request.spec.labels, request.spec.threshold)


def _settings(request: ExportRequest, n_layers_hint: int | None = None) -> dict[str, Any]:
    opts = request.options
    target = opts.get("accuracy_target")
    if target is not None and (not isinstance(target, (int, float)) or not math.isfinite(target)
                               or not 0 < target <= 1):
        raise ConfigError(f"--accuracy-target {target!r}: give the agreement to reach, a number in (0, 1], "
                          "e.g. 0.98")
    limit = opts.get("max_float_layers")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ConfigError(f"--max-float-layers {limit!r}: give a whole number >= 0")
    forced = opts.get("float_layers")
    if isinstance(forced, str):
        forced = [n.strip() for n in forced.split(",") if n.strip()]
    return {"target": target, "limit": limit, "forced": list(forced) if forced else None,
            "mixed": opts.get("mixed_precision", True), "explain": bool(opts.get("explain"))}


def _thresholds(request: ExportRequest, target: float | None) -> dict[str, list]:
    from .parity import thresholds_for

    table = {k: list(v) for k, v in (request.parity_thresholds or thresholds_for(request.spec.task, "int8")).items()}
    primary = PRIMARY[request.spec.task]
    if target is not None:
        table[primary] = ["min", float(target)]
    return table


def quantize_onnx_static(src: Path, dst: Path, request: ExportRequest, symmetric_activations: bool
                         ) -> tuple[dict[str, Any], list[str]]:
    """fp32 ONNX -> QDQ int8 ONNX (mixed precision where needed); returns (target_options, extra bundle files)."""
    require("onnxruntime")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .progress import progress_of
    from .quantize_calib import calibrate, passes, save_cache

    method = request.options.get("calibration_method", "minmax")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"--calib-method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    settings = _settings(request)
    if request.calibration is None or not request.calibration.images:
        raise ExportError("int8 needs calibration images: pass --calib-data DIR (real ultrasound frames, ~300)")
    scratch = Path(tempfile.mkdtemp(prefix=".int8-", dir=dst.parent))
    try:
        prepared = scratch / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation; quantise the plain graph if it fails
            log.warning("onnxruntime quant_pre_process failed (%s); quantising the unoptimised graph", exc)
            shutil.copyfile(src, prepared)
        _copy_module_names(src, prepared)
        progress = progress_of(request)
        job = Int8Job(prepared, scratch, request.spec.task, postprocessing(request), symmetric_activations,
                      search_frames(list(_inputs(request, "parity"))), _thresholds(request, settings["target"]),
                      output_linear_layers(prepared), progress=progress)
        from .quantize_mixed import check_names, choose

        if settings["forced"]:
            check_names(job, settings["forced"])  # before the calibration passes
        methods = [m for m in CALIBRATION_METHODS if m != "auto"] if method == "auto" else [method]
        frames, rounds = len(request.calibration.images), passes(methods)
        progress.stage(f"calibrate on {frames} frames" + (f" ({rounds} passes)" if rounds > 1 else ""),
                       frames * rounds)
        ranges = calibrate(prepared, lambda: progress.each(_inputs(request, "calibration")), methods)
        job.caches = {m: save_cache(r, scratch / f"calib-{m}.json") for m, r in ranges.items()}
        chosen, options, extra = choose(job, method, settings, dst.parent)
        import onnx

        progress.stage("write int8 model")
        onnx.save(chosen, str(dst))
        onnx.checker.check_model(str(dst))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    options.update({"quantization": "static QDQ", "weights": "int8 symmetric per-channel",
                    "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
                    "calibration_images": len(request.calibration.images), "calibration_streamed": True,
                    "calibration_source": request.calibration.origin})
    return options, extra


def _copy_module_names(src: Path, dst: Path) -> None:
    """Carry the PyTorch module path of each node (exporter metadata) into the pre-processed graph."""
    import onnx

    from .quantize_graph import MODULE_KEY, module_names

    names = module_names(onnx.load(str(src), load_external_data=False))
    model = onnx.load(str(dst))
    changed = False
    for node in model.graph.node:
        if node.name in names and not any(p.key == MODULE_KEY for p in node.metadata_props):
            node.metadata_props.add(key=MODULE_KEY, value=names[node.name])
            changed = True
    if changed:
        onnx.save(model, str(dst))
