"""`export(...)`: MODEL -> verified bundle for one target and precision. The CLI calls this.

Steps: resolve the model -> pick calibration/parity images -> (fold raw input) -> target conversion in a
hidden work folder -> manifest -> parity through the runtime -> reference vectors for the self-test -> publish
atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..distill.progress import progress_enabled
from ..errors import ConfigError
from ..runtime.measure import parse_measurements
from ..runtime.postprocess import postprocessing_for as postprocess_block
from .base import ExportConfig, ExportError, ExportRequest, version_of
from .bundle import discard, hash_files, make_workdir, now_iso, publish, write_manifest
from .parity import compare, judge, reference_outputs, thresholds_for
from .progress import ExportProgress
from .quantize_calib import frames_for, write_frame_record
from .quantize_mixed import searches, split_held_out
from .record import pop_record_options, trace_lineage, write_record
from .reference import check_reference_frames, write_reference_vectors
from .source import BUILTINS, resolve_model
from .targets import TARGETS, canonical_target, check_precision, resolve_options, target_module
from .upsample_fold import fold_decoder_upsampling
from .wrappers import fold_raw_input

log = logging.getLogger(__name__)
PARITY_CHUNK = 8  # parity frames per PyTorch / runtime call


def preprocessing_for(spec, raw_input: bool) -> dict[str, Any]:
    """The manifest's preprocessing block (what the runtime and the Android core reproduce)."""
    return {"image_size": [spec.image_size, spec.image_size], "resize": "stretch",
            "interpolation": "bilinear_antialias", "scale": 1 / 255, "mean": list(spec.mean), "std": list(spec.std),
            "gray_to_rgb": "in_model" if raw_input else "replicate", "color_to_gray": "bt601_luma",
            "raw_input": raw_input}


def postprocessing_for(spec) -> dict[str, Any]:
    """The manifest's postprocessing block, with the card's threshold (rules in runtime/postprocess.py)."""
    return postprocess_block(spec.task, spec.labels, spec.threshold)


def count_flops(model: torch.nn.Module, image_size: int, channels: int = 3) -> int | None:
    """FLOPs of one forward pass at batch 1 (2 x multiply-adds), recorded for GFLOP/s in benchmarks."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, channels, image_size, image_size))
        return int(counter.get_total_flops())
    except Exception:  # flop counting is informative only
        return None


def value_range(pre: dict[str, Any]) -> list[float]:
    if pre["raw_input"]:
        return [0.0, 255.0]
    lows = [(0 - m) / s for m, s in zip(pre["mean"], pre["std"], strict=True)]
    highs = [(1 - m) / s for m, s in zip(pre["mean"], pre["std"], strict=True)]
    return [round(min(lows), 6), round(max(highs), 6)]


def export(model: str, target: str, precision: str = "fp32", out: str | Path | None = None,
           **kwargs: Any) -> dict[str, Any]:
    """Export MODEL to a bundle folder and return its manifest: `export_config(ExportConfig.of(...))`.

    Keyword arguments are ExportConfig's fields (image_size, calib_data, parity_data, dynamic_batch, raw_input,
    parity, num_calib, num_parity, parity_thresholds, overwrite, fold_upsampling, sign_key, measurements); the
    rest are target options of the capability table (targets.py), e.g. nhwc=True, io="float", explain=True.
    """
    return export_config(ExportConfig.of(model, target, precision, out, **kwargs))


def export_config(config: ExportConfig) -> dict[str, Any]:
    """Export `config.model` to a bundle folder and return its manifest (parity summary included).

    `fold_upsampling` rewrites a U-Net decoder's nearest-upsample + 3x3 convolution into fewer
    multiply-adds (upsample_fold.py); None = for fp32/fp16 only. Parity is always measured against the
    unmodified PyTorch model. The request is checked against the capability table (targets.py) before
    anything is built: options the target/precision does not take are refused; defaults come from the table.
    `sign_key`: an Ed25519 private key PEM; the bundle then carries bundle.sig. `measurements`: what the runtime
    measures on masks ("area,ellipse", a list, or "none"; None: area for segmentation, none otherwise).
    """
    c = config
    model, parity, parity_thresholds, num_parity = c.model, c.parity, c.parity_thresholds, c.num_parity
    target = canonical_target(c.target)
    precision = check_precision(target, c.precision)
    options = resolve_options(target, precision, {"calib_data": c.calib_data, "num_calib": c.num_calib,
                                                  "dynamic_batch": c.dynamic_batch,
                                                  "fold_upsampling": c.fold_upsampling,
                                                  "measurements": _measurement_option(c.measurements), **c.options})
    record_options = pop_record_options(options)  # --intended-use, --record, --license (record.py)
    calib_data, num_calib = options.pop("calib_data", None), options.pop("num_calib", 0)
    dynamic_batch, fold_upsampling = options.pop("dynamic_batch", False), options.pop("fold_upsampling")
    measurements = options.pop("measurements")
    reference_frames = check_reference_frames(options.pop("reference_frames"))
    module = target_module(target)
    module.check_available()
    if hasattr(module, "preflight"):
        module.preflight(options)
    net, spec = resolve_model(model, c.image_size)
    lineage = trace_lineage(model, spec.source)  # the cards back to the first ancestor, smoke_test_only
    measure = _measurements_for(spec.task, measurements)
    raw = c.raw_input or TARGETS[target].raw_input_only
    pre = preprocessing_for(spec, raw)
    calibration, parity_set = frames_for(TARGETS[target].calibrates(precision, options), Path(calib_data) if calib_data
                                         else None, c.parity_data, num_calib, num_parity)
    search_set = None
    if TARGETS[target].calibrates(precision, options) and searches(options):  # choose on one part, judge on the other
        search_set, parity_set = split_held_out(parity_set)
    thresholds = thresholds_for(spec.task, precision, parity_thresholds)  # ConfigError before anything is built
    out = Path(c.out) if c.out else Path(f"{spec.name}-{target}-{precision}")
    convertible = fold_raw_input(net, spec.mean, spec.std, spec.image_size) if raw else net
    folded_blocks = 0
    if fold_upsampling:
        convertible, folded_blocks = fold_decoder_upsampling(convertible, spec.image_size)
    request = ExportRequest(model=convertible, spec=spec, precision=precision, image_size=spec.image_size,
                            raw_input=raw, dynamic_batch=dynamic_batch, calibration=calibration, preprocessing=pre,
                            options=options, parity_images=search_set or parity_set,
                            parity_thresholds=thresholds)
    workdir = make_workdir(out, c.overwrite)
    stages = ExportProgress(f"export {target} {precision}", progress_enabled(log))  # stages, items with ETA
    request.progress = stages  # the target's calibration, search and int8 conversion report their own stages
    try:
        stages.begin("convert")
        result = module.convert(request, workdir)
        result.inputs[0].setdefault("value_range", value_range(pre))
        result.target_options["decoder_upsample_folded_blocks"] = folded_blocks
        flops = count_flops(convertible, spec.image_size, channels=1 if raw else 3)
        manifest = _manifest(spec, target, precision, result, pre, flops, model)
        manifest["measurements"] = measure
        manifest["smoke_test_only"] = lineage.smoke_test_only
        if calibration is not None:  # the calibration and parity frame lists (sha256 per frame)
            result.extra_files.append(write_frame_record(workdir, calibration, parity_set, result.target_options,
                                                         search_set))
        manifest["files"] = hash_files(workdir, [result.model_file, *result.extra_files])
        write_manifest(workdir, manifest)
        checks = parity and not result.parity_skip_reason
        stages.stage(f"parity on {len(parity_set.images)} frames" if checks else "parity skipped",
                     len(parity_set.images) if checks else None)
        report = _parity(net, spec, precision, workdir, parity_set, result, parity, parity_thresholds, pre, stages)
        from ..io import atomic_write_json

        atomic_write_json(workdir / "parity.json", report)
        manifest["parity"] = {k: report[k] for k in ("status", "reason", "metrics", "backend", "data") if k in report}
        manifest["files"]["parity.json"] = hash_files(workdir, ["parity.json"])["parity.json"]
        manifest["files"].update(write_record(workdir, manifest, record_options, lineage, calibration, parity_set,
                                              report))  # record.json + MODEL_CARD.md
        write_manifest(workdir, manifest)
        if report["status"] == "failed":
            raise ExportError(
                f"parity failed for {target} {precision} on {report['images']} images ({report['data']}): "
                f"{'; '.join(report['failures'])}. Nothing was written to {out}. Check calibration data, or relax "
                "with --parity-threshold METRIC=VALUE if this loss is acceptable"
            )
        stages.begin("self-test reference vectors")
        vector_files, manifest["reference_vectors"] = write_reference_vectors(  # the self-test (reference.py)
            workdir, manifest, parity_set, reference_frames, convertible, result.parity_skip_reason)
        manifest["files"].update(vector_files)
        write_manifest(workdir, manifest)
        stages.begin("write bundle")
        publish(workdir, out, sign_key=c.sign_key)  # bundle.sha256 (+ bundle.sig) written last
    except BaseException:
        stages.close(failed=True)
        discard(workdir)
        raise
    stages.close()
    manifest["bundle"] = str(out)
    return manifest


def _measurement_option(value: str | list[str] | None) -> str | None:
    """Any spelling ("ellipse,area", ["area"], "none") -> the table's canonical value; None stays None."""
    if value is None:
        return None
    return ",".join(parse_measurements(value)) or "none"


def _measurements_for(task: str, option: str | None) -> list[str]:
    """The manifest's `measurements`: as asked, or by task (area for segmentation); only segmentation measures."""
    names = ["area"] if option is None and task == "segmentation" else parse_measurements(option)
    if names and task != "segmentation":
        raise ConfigError(f"--measurements {','.join(names)}: a {task} model has no mask to measure; drop it")
    return names


def _manifest(spec, target, precision, result, pre, flops, model_arg) -> dict[str, Any]:
    return {
        "schema_version": 1, "name": spec.name, "task": spec.task, "target": target, "precision": precision,
        "model_file": result.model_file, "inputs": result.inputs, "preprocessing": pre, "outputs": result.outputs,
        "postprocessing": result.postprocessing or postprocessing_for(spec), "labels": list(spec.labels), "files": {},
        "source": {"model": model_arg if model_arg in BUILTINS else spec.source, "sha256": spec.source_sha256,
                   "architecture": f"{spec.task}:{spec.encoder}"},
        "flops": flops, "target_options": result.target_options,
        "tool_versions": {"pocus-edge": __version__, "torch": torch.__version__.split("+")[0],
                          "numpy": np.__version__, **result.tool_versions},
        "created_at": now_iso(),
    }


def _parity(net, spec, precision, workdir, images, result, enabled, overrides, pre,
            progress: ExportProgress) -> dict[str, Any]:
    base = {"reference": "pytorch fp32", "data": images.origin, "images": len(images.images),
            "thresholds": thresholds_for(spec.task, precision, overrides)}
    if not enabled:
        return {**base, "status": "skipped", "reason": "disabled with --no-parity", "metrics": {}, "failures": []}
    if result.parity_skip_reason:
        return {**base, "status": "skipped", "reason": result.parity_skip_reason, "metrics": {}, "failures": []}
    from ..runtime import load

    predictor = load(workdir, backend=result.target_options.get("parity_backend"))
    refs, outs = [], []
    for start in range(0, len(images.images), PARITY_CHUNK):  # a chunk at a time: the stage counts frames
        chunk = images.images[start:start + PARITY_CHUNK]
        refs.append(reference_outputs(net, chunk, pre))
        outs.append(predictor.raw_outputs(chunk))
        progress.advance(len(chunk))
    post = postprocessing_for(spec)  # the card's block for PyTorch; the bundle's own for its outputs
    metrics = compare(spec.task, np.concatenate(refs), np.concatenate(outs), post, result.postprocessing or post)
    failures = judge(metrics, base["thresholds"])
    return {**base, "status": "failed" if failures else "passed", "backend": predictor.backend.name,
            "metrics": metrics, "failures": failures, "versions": {"onnxruntime": version_of("onnxruntime"),
                                                                   "ai-edge-litert": version_of("ai-edge-litert")}}
