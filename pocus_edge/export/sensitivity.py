"""Per-layer int8 sensitivity report: `--explain` writes quant_report.json, quant_report.md and quant_report.png.

For every layer (ONNX: Conv/ConvTranspose/Gemm/MatMul node, shown with the module path of the convolution it came
from, not of the BatchNorm fused into it; TFLite: the convolution/linear module path, tflite_mixed.py): the model
with only that layer quantised (ONNX: ORT's nodes_to_quantize on the shared calibration cache; TFLite: PT2E
annotating only that module) and the full int8 model with only that layer kept in float, each scored against the
one fp32 pass on up to 8 held-out frames: the task's agreement (mask Dice, top-1 or cosine) and the output SQNR;
for quantised-alone also the SQNR of the layer's own output activation (against the float layer fed the same
inputs). Ranked by how much keeping the layer in float recovers (float-alone output SQNR, then quantised-alone
output SQNR): the order automatic mixed precision tries. The `layer` column is the name --float-layers takes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FILES = ("quant_report.json", "quant_report.md", "quant_report.png")
DPI = 110


def layer_sensitivity(job, method: str) -> dict[str, Any]:
    """The ranked per-layer table (see the module docstring)."""
    from .progress import progress_of
    from .quantize import EXPLAIN_FRAMES

    start = time.perf_counter()
    frames = job.eval_frames[:EXPLAIN_FRAMES]
    if hasattr(job, "precalibrate"):  # TFLite: one calibration pass for all the variants, not one per layer
        job.precalibrate([([layer], None) for layer in job.layers] + [([], [layer]) for layer in job.layers])
    progress_of(job).stage(f"sensitivity report ({len(job.layers)} layers)", len(job.layers))
    rows = []
    for layer in progress_of(job).each(job.layers):
        alone, activation = job.alone(method, layer, len(frames)) if hasattr(job, "alone") else \
            _onnx_alone(job, method, layer, len(frames))
        floated = job.score(job.mixed(method, [layer]), len(frames))
        rows.append({"layer": layer, "module": job.modules.get(layer, ""),
                     "op": job.op(layer) if hasattr(job, "op") else
                     next(n.op_type for n in job.fp32.graph.node if n.name == layer),
                     "quantized_alone": {job.primary: round(alone[job.primary], 6),
                                         "output_sqnr_db": alone["output_sqnr_db"],
                                         "activation_sqnr_db": activation},
                     "float_alone": {job.primary: round(floated[job.primary], 6),
                                     "output_sqnr_db": floated["output_sqnr_db"]}})
    rows.sort(key=lambda r: (-r["float_alone"]["output_sqnr_db"], r["quantized_alone"]["output_sqnr_db"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    full = job.score(job.full(method), len(frames))
    return {"method": method, "metric": job.primary, "frames": len(frames),
            "frames_note": f"{len(frames)} of {len(job.eval_frames)} held-out parity frames, evenly spaced in "
                           "file-name order",
            "full_int8": {job.primary: round(full[job.primary], 6), "output_sqnr_db": full["output_sqnr_db"]},
            "layers_in_float_by_rule": job.rule_float, "seconds": round(time.perf_counter() - start, 1),
            "layers": rows}


def _onnx_alone(job, method: str, layer: str, count: int) -> tuple[dict[str, float], float]:
    """ONNX: (metrics with only `layer` quantised, SQNR of its output against a float copy fed the same inputs)."""
    import onnx

    from .parity import compare
    from .quantize_graph import quantize, run, sqnr_db, with_probe

    frames, ref = job.eval_frames[:count], job.reference[:count]
    alone = job.scratch / "alone.onnx"
    quantize(job.prepared, alone, job.caches[method], method, job.symmetric, job.rule_float, only=[layer])
    probed, seen, probe = with_probe(onnx.load(str(alone)), job.fp32, layer)
    out, act, act_ref = run(probed, frames, outputs=[job.fp32.graph.output[0].name, seen, probe])
    return {**compare(job.task, ref, out, job.post), "output_sqnr_db": sqnr_db(ref, out)}, sqnr_db(act_ref, act)


def write_report(folder: Path, report: dict[str, Any]) -> list[str]:
    """Write the three report files into `folder`; returns their names (the PNG only if matplotlib is present)."""
    from ..io import atomic_write_json

    atomic_write_json(folder / FILES[0], report)
    (folder / FILES[1]).write_text(_markdown(report))
    written = list(FILES[:2])
    try:
        _chart(report, folder / FILES[2])
        written.append(FILES[2])
    except ImportError:
        log.warning("matplotlib is not installed; quant_report.png not written (pip install matplotlib)")
    return written


def _markdown(report: dict[str, Any]) -> str:
    m = report["metric"]
    lines = [
        "# int8 sensitivity report", "",
        f"Calibration `{report['method']}`; scored against the fp32 graph on {report['frames_note']}; "
        f"{len(report['layers'])} layers; {report['seconds']} s.",
        f"Full int8: {m} {report['full_int8'][m]:.4f}, output SQNR {report['full_int8']['output_sqnr_db']:.1f} dB. "
        f"Kept in float by rule: {', '.join(report['layers_in_float_by_rule']) or 'none'}. "
        f"Kept in float in this bundle: {', '.join(report.get('chosen_float_layers') or []) or 'none'}.", "",
        "Ranked by how much keeping the layer alone in float recovers. Force a list with "
        "`--float-layers NAME,...`.", "",
        f"| rank | layer | module | op | float alone: {m} | float alone: out SQNR dB | quantised alone: {m} "
        "| quantised alone: out SQNR dB | quantised alone: activation SQNR dB |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in report["layers"]:
        f, q = r["float_alone"], r["quantized_alone"]
        module = "-" if r["module"] in ("", r["layer"]) else r["module"]
        lines.append(f"| {r['rank']} | `{r['layer']}` | {module} | {r['op']} | {f[m]:.4f} | "
                     f"{f['output_sqnr_db']:.1f} | {q[m]:.4f} | {q['output_sqnr_db']:.1f} | "
                     f"{q['activation_sqnr_db']:.1f} |")
    return "\n".join(lines) + "\n"


def label(row: dict[str, Any]) -> str:
    """A layer as the user names it: the layer (what --float-layers takes), then its module path when different."""
    return row["layer"] if row["module"] in ("", row["layer"]) else f"{row['layer']} ({row['module']})"


def figure(report: dict[str, Any], top: int = 30):
    """The ranking chart: output SQNR per layer, labels whole (the figure widens to the longest), x axis spanning
    the values (not from 0: the ranking lives in a few dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"][:top]
    labels = [label(r) for r in rows][::-1]
    floated = [r["float_alone"]["output_sqnr_db"] for r in rows][::-1]
    quantised = [r["quantized_alone"]["output_sqnr_db"] for r in rows][::-1]
    full = report["full_int8"]["output_sqnr_db"]
    height = 0.3 * len(rows) + 1.8
    fig, ax = plt.subplots(figsize=(9, height), dpi=DPI)
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], floated, 0.4, label="only this layer in float")
    ax.barh([y - 0.2 for y in ys], quantised, 0.4, label="only this layer quantised")
    ax.axvline(full, color="k", lw=1, ls="--", label=f"full int8 ({full:.1f} dB)")
    ax.set_yticks(list(ys), labels, fontsize=7)
    values = [*floated, *quantised, full]
    span = max(max(values) - min(values), 1.0)
    ax.set_xlim(min(values) - 0.15 * span, max(values) + 0.1 * span)
    ax.set_xlabel("output SQNR vs fp32 (dB, higher = closer to fp32)")
    ax.set_title(f"int8 sensitivity ({report['frames']} held-out frames, {report['method']}, "
                 f"{report['metric']} in quant_report.md)", fontsize=9, pad=20)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)  # off the bars
    fig.canvas.draw()
    widest = max((t.get_window_extent().width for t in ax.get_yticklabels()), default=0) / fig.dpi
    fig.set_size_inches(max(9.0, widest + 7.0), height)
    fig.tight_layout()
    return fig


def _chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(report)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)  # nothing drawn outside the file
    plt.close(fig)


def explain_int8(model: str, calib_data: str | Path, out: str | Path, target: str = "onnx",
                 **options: Any) -> dict[str, Any]:
    """Export MODEL to int8 with the sensitivity report and return it (also in OUT/quant_report.json)."""
    from .api import export

    export(model, target, "int8", out, calib_data=calib_data, explain=True, **options)
    return json.loads((Path(out) / FILES[0]).read_text())
