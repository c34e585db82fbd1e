"""Choosing the int8 model: calibration method (auto), forced or automatic float layers, and what it cost.

Automatic mixed precision (NNCF/TensorRT style: the accuracy target is the input, the float layers the output):
full int8 is scored against the fp32 graph on the held-out parity frames; if it misses the target, layers are
ranked by how much keeping each one alone in float recovers (output SQNR on up to 8 frames), and tried in that
order: a layer stays in float only if it raises the agreement on the search frames (every try is recorded),
until the target is met, the limit is reached or 3 x the limit layers were tried. Targets: ONNX/TensorRT
(Int8Job, quantize.py) and TFLite PT2E (TfliteInt8Job, tflite_mixed.py), one interface. TFLite's search scores
a PyTorch simulation of the int8 graph; before searching, the converted full-int8 .tflite is scored in LiteRT on
the same frames, and if it meets the target it ships without float layers (both scores are recorded, and the
chosen mixed model's converted score too). The mixed model and full int8 are timed (median of a few runs, same
thread count) and both recorded.

The choice is made on one part of the held-out frames and judged on the other (`split_held_out`): the search (and
`--calib-method auto`) sees only the search part, the bundle's final parity check only the check part, so the
reported agreement is not measured on the frames the float layers were picked on. calibration_frames.json lists
both parts.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import ExportError
from .data import ImageSet
from .progress import progress_of

LIMIT_FRACTION = 0.05  # --max-float-layers default: 5 % of the layers (at least 1)
TIMED_RUNS = 5
THREADS = 1
MIN_SPLIT_FRAMES = 2  # frames each part of the held-out set needs at least (search, final check)
TRIES_PER_LAYER = 3  # the search tries at most this many ranked layers per layer it may keep


def searches(options: dict[str, Any]) -> bool:
    """Whether this int8 export chooses something on held-out frames (automatic float layers or `auto` method)."""
    automatic = bool(options.get("mixed_precision")) and not options.get("float_layers")
    return "mixed_precision" in options and (automatic or options.get("calibration_method") == "auto")


def split_held_out(parity: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(search part, final-check part) of the held-out frames, disjoint and deterministic.

    Frames are grouped by source file (the frames of one cine loop stay together) and by content (a frame copied
    under two names stays on one side); groups are ordered by a sha256 of their frames' digests and the first
    half of the frames goes to the search, the rest to the final check. Raises ConfigError when either part would
    hold fewer than MIN_SPLIT_FRAMES frames.
    """
    from .quantize_calib import frame_digest

    digests = [frame_digest(im) for im in parity.images]
    group = list(range(len(digests)))  # union of "same file" and "same pixels"

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    first: dict[str, int] = {}
    for i, (name, digest) in enumerate(zip(parity.names, digests, strict=True)):
        for key in (f"file:{name.rsplit('#', 1)[0]}", f"sha:{digest}"):
            if key in first:
                group[root(i)] = root(first[key])
            first.setdefault(key, i)
    members: dict[int, list[int]] = {}
    for i in range(len(digests)):
        members.setdefault(root(i), []).append(i)
    order = sorted(members.values(), key=lambda m: hashlib.sha256("".join(sorted(digests[i] for i in m)).encode())
                   .hexdigest())
    search: list[int] = []
    for m in order:
        if len(search) * 2 >= len(digests):
            break
        search += m
    taken = set(search)
    check = [i for i in range(len(digests)) if i not in taken]
    if min(len(search), len(check)) < MIN_SPLIT_FRAMES:
        raise ConfigError(
            f"int8 mixed precision picks its float layers on one part of the held-out frames and checks parity on "
            f"the other, each of at least {MIN_SPLIT_FRAMES} frames; {parity.origin} gives {len(digests)} frame(s) "
            f"in {len(order)} file/content group(s), split {len(search)}/{len(check)}. Pass --parity-data DIR with "
            "more real frames (or a larger --num-parity), or skip the search with --no-mixed-precision or "
            "--float-layers NAME,...")

    def part(indices: list[int], origin: str) -> ImageSet:
        return ImageSet([parity.images[i] for i in indices], [parity.names[i] for i in indices], origin)

    return part(search, f"{parity.origin} (mixed-precision search part)"), part(check, parity.origin)


def default_limit(n_layers: int) -> int:
    return max(1, math.ceil(LIMIT_FRACTION * n_layers))


def pick_method(job) -> tuple[str, dict[str, Any]]:
    """`auto`: the calibration method whose full int8 model agrees best with fp32 on the held-out frames."""
    progress = progress_of(job)
    progress.stage(f"choose the calibration method ({len(job.caches)} tried)", len(job.caches))
    scores = {m: job.score(job.full(m)) for m in progress.each(job.caches)}
    best = max(scores, key=lambda m: (scores[m][job.primary], scores[m]["output_sqnr_db"]))
    return best, {m: {job.primary: s[job.primary], "output_sqnr_db": s["output_sqnr_db"]} for m, s in scores.items()}


def layer_of(job, name: str) -> str | None:
    """The layer `name` means: a layer name, or the module path of exactly one layer (ONNX: `encoder.layer1.0.conv1`
    for its Conv node); None when it names none."""
    if name in job.layers:
        return name
    matches = [layer for layer in job.layers if job.modules.get(layer) == name]
    return matches[0] if len(matches) == 1 else None


def check_names(job, names: list[str]) -> None:
    unknown = [n for n in names if layer_of(job, n) is None]
    if unknown:
        rule = [n for n in unknown if n in job.rule_float]
        why = f" ({', '.join(rule)} stays in float anyway)" if rule else ""
        kind = getattr(job, "graph_kind", "ONNX graph")
        examples = ", ".join(job.layers[:3])
        raise ConfigError(
            f"--float-layers {', '.join(unknown)}: not a quantisable layer of this model's {kind}{why}. It has "
            f"{len(job.layers)} layers named like {examples}; list them all, ranked by "
            "sensitivity, with --explain (quant_report.md in the bundle) or pocus_edge.export.explain_int8(...)")


def choose(job, method: str, settings: dict[str, Any], workdir: Path) -> tuple[Any, dict[str, Any], list[str]]:
    """(the int8 ModelProto to ship, target_options, extra bundle files)."""
    options: dict[str, Any] = {}
    if method == "auto":
        method, options["calibration_auto"] = pick_method(job)
    options["calibration_method"] = method
    report = None
    if settings["explain"]:
        from .sensitivity import layer_sensitivity

        report = layer_sensitivity(job, method)
    floats: list[str] = []
    if settings["forced"]:
        check_names(job, settings["forced"])
        floats = list(dict.fromkeys(layer_of(job, n) for n in settings["forced"]))
        options["mixed_precision"] = {"mode": "forced with --float-layers"}
    elif settings["mixed"] and job.eval_frames:
        floats, options["mixed_precision"] = _search(job, method, settings, report)
    else:
        options["mixed_precision"] = {"mode": "off" if not settings["mixed"] else "off: no held-out frames"}
    model = job.mixed(method, floats)
    if floats:
        progress_of(job).stage("time full int8 and mixed", 2)
        options["mixed_precision"]["latency_ms"] = _latency(job, method, model)
        options["mixed_precision"]["mixed"] = _summary(job, job.score(model))
        if hasattr(job, "score_converted"):
            options["mixed_precision"]["mixed_converted"] = _summary(job, job.score_converted(model))
    options["float_layers"] = job.rule_float + floats
    options["float_layer_modules"] = {n: job.modules[n] for n in options["float_layers"] if n in job.modules}
    extra: list[str] = []
    if report is not None:
        from .sensitivity import write_report

        report["chosen_float_layers"] = floats
        extra = write_report(workdir, report)
    return model, options, extra


def _summary(job, metrics: dict[str, float]) -> dict[str, float]:
    return {job.primary: round(metrics[job.primary], 6), "output_sqnr_db": metrics["output_sqnr_db"]}


def _search(job, method: str, settings: dict[str, Any], report) -> tuple[list[str], dict[str, Any]]:
    """Greedy float fallback in ranked order that keeps a layer only when it raises the search-part agreement;
    every try is recorded. Raises ExportError when the target cannot be met within the limit."""
    target = job.thresholds[job.primary][1]
    limit = settings["limit"] if settings["limit"] is not None else default_limit(len(job.layers))
    tries = min(len(job.layers), TRIES_PER_LAYER * limit)
    progress = progress_of(job)
    progress.stage(f"score full int8 on {len(job.eval_frames)} search frames")
    full = job.score(job.full(method))
    record: dict[str, Any] = {"mode": "automatic", "accuracy_target": {job.primary: target},
                              "frames": len(job.eval_frames), "full_int8": _summary(job, full)}
    if job.passes(full):
        record["result"] = "full int8 met the target"
        return [], record
    if hasattr(job, "score_converted"):  # TFLite: `score` simulates int8 in PyTorch; the judge is what ships
        progress.stage("score the converted full int8 model on the search frames")
        converted = job.score_converted(job.full(method))
        record["full_int8_converted"] = _summary(job, converted)
        if job.passes(converted):
            record["result"] = "full int8 met the target (converted model; the simulation missed it)"
            return [], record
    record.update(max_float_layers=limit, max_tries=tries, keep_rule=f"a layer stays in float only if it raises "
                  f"{job.primary} on the search frames")
    if report:
        order = [r["layer"] for r in report["layers"]]
    else:
        order = rank_float_alone(job, method)
    progress.stage(f"mixed-precision search (up to {tries} tries)", tries)
    floats: list[str] = []
    steps: list[dict[str, Any]] = []
    record["steps"] = steps
    current = full
    for layer in order[:tries]:
        if len(floats) >= limit:
            break
        metrics = job.score(job.mixed(method, [*floats, layer]))
        progress.advance()
        kept = metrics[job.primary] > current[job.primary]
        steps.append({"layer": layer, f"{job.primary}_before": round(current[job.primary], 6),
                      f"{job.primary}_after": round(metrics[job.primary], 6),
                      "output_sqnr_db": metrics["output_sqnr_db"], "kept": kept})
        if not kept:
            continue
        floats.append(layer)
        steps[-1]["float_layers"] = list(floats)
        current = metrics
        if job.passes(metrics):
            record["result"] = "target met"
            return floats, record
    failing = "; ".join(f"{k} {v[0]} {v[1]}" for k, v in job.thresholds.items())
    converted = record.get("full_int8_converted")
    converted_note = f" (converted .tflite: {converted[job.primary]:.4g})" if converted else ""
    tried = ", ".join(f"{s['layer']} ({'kept' if s['kept'] else 'no gain'})" for s in steps) or "none"
    raise ExportError(
        f"int8 misses the accuracy target ({failing}) on {len(job.eval_frames)} held-out frames: full int8 "
        f"({method} calibration) {job.primary} {full[job.primary]:.4g}{converted_note}; best "
        f"{current[job.primary]:.4g} with {len(floats)} layer(s) in float ({', '.join(floats) or 'none'}); "
        f"tried in order: {tried} "
        f"(--max-float-layers {limit} of {len(job.layers)}, at most {tries} tries). Nothing was written. Allow "
        "more with --max-float-layers N, lower --accuracy-target, check the calibration frames "
        "(--calib-method auto), or export fp16")


def rank_float_alone(job, method: str) -> list[str]:
    """Layers by the output SQNR reached when each alone stays in float (most helpful first)."""
    from .quantize import EXPLAIN_FRAMES

    if hasattr(job, "precalibrate"):  # TFLite: one calibration pass for all the variants, not one per layer
        job.precalibrate([([layer], None) for layer in job.layers])
    progress_of(job).stage(f"rank the {len(job.layers)} layers for the search", len(job.layers))
    gains = {layer: job.score(job.mixed(method, [layer]), EXPLAIN_FRAMES)["output_sqnr_db"]
             for layer in progress_of(job).each(job.layers)}
    return sorted(job.layers, key=lambda n: -gains[n])


def _latency(job, method: str, mixed) -> dict[str, Any]:
    """Median latency of full int8 and the mixed model: ONNX Runtime, or the job's own runtime (`job.timed`)."""
    result: dict[str, Any] = {"threads": THREADS, "runs": TIMED_RUNS, "statistic": "median"}
    for name, model in progress_of(job).each((("full_int8", job.full(method)), ("mixed", mixed))):
        result[name] = job.timed(model, name, THREADS, TIMED_RUNS) if hasattr(job, "timed") else \
            _onnx_latency(job, model, name)
    return result


def _onnx_latency(job, model, name: str) -> float:
    import onnx

    from .quantize_graph import latency_ms

    path = job.scratch / f"timed-{name}.onnx"
    onnx.save(model, str(path))
    return latency_ms(path, job.eval_frames[0], TIMED_RUNS, THREADS)
