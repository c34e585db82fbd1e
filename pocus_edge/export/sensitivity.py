"""Per-layer int8 sensitivity report: `--explain` writes quant_report.json, quant_report.md and quant_report.png.

For every layer (Conv/ConvTranspose/Gemm/MatMul node of the ONNX graph): the model with only that layer quantised
(ORT's nodes_to_quantize on the shared calibration cache) and the full int8 model with only that layer kept in
float, each scored against the one fp32 pass on up to 8 held-out frames: the task's agreement (mask Dice, top-1
or cosine) and the output SQNR; for quantised-alone also the SQNR of the layer's own output activation (against a
float copy of the layer fed the same inputs). Ranked by how much keeping the layer in float recovers (float-alone
output SQNR, then quantised-alone output SQNR): the order automatic mixed precision follows.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FILES = ("quant_report.json", "quant_report.md", "quant_report.png")


def layer_sensitivity(job, method: str) -> dict[str, Any]:
    """The ranked per-layer table (see the module docstring)."""
    from .parity import compare
    from .quantize import EXPLAIN_FRAMES
    from .quantize_graph import quantize, run, sqnr_db, with_probe

    start = time.perf_counter()
    frames = job.eval_frames[:EXPLAIN_FRAMES]
    ref = job.reference[:len(frames)]
    output = job.fp32.graph.output[0].name
    rows = []
    for layer in job.layers:
        alone = job.scratch / "alone.onnx"
        quantize(job.prepared, alone, job.caches[method], method, job.symmetric, job.rule_float, only=[layer])
        import onnx

        probed, seen, probe = with_probe(onnx.load(str(alone)), job.fp32, layer)
        out, act, act_ref = run(probed, frames, outputs=[output, seen, probe])
        quantized = compare(job.task, ref, out, job.threshold)
        floated = job.score(job.mixed(method, [layer]), len(frames))
        rows.append({"layer": layer, "module": job.modules.get(layer, ""),
                     "op": next(n.op_type for n in job.fp32.graph.node if n.name == layer),
                     "quantized_alone": {job.primary: round(quantized[job.primary], 6),
                                         "output_sqnr_db": sqnr_db(ref, out),
                                         "activation_sqnr_db": sqnr_db(act_ref, act)},
                     "float_alone": {job.primary: round(floated[job.primary], 6),
                                     "output_sqnr_db": floated["output_sqnr_db"]}})
    rows.sort(key=lambda r: (-r["float_alone"]["output_sqnr_db"], r["quantized_alone"]["output_sqnr_db"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    full = job.score(job.full(method), len(frames))
    return {"method": method, "metric": job.primary, "frames": len(frames),
            "frames_note": f"first {len(frames)} of {len(job.eval_frames)} held-out parity frames",
            "full_int8": {job.primary: round(full[job.primary], 6), "output_sqnr_db": full["output_sqnr_db"]},
            "layers_in_float_by_rule": job.rule_float, "seconds": round(time.perf_counter() - start, 1),
            "layers": rows}


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
        lines.append(f"| {r['rank']} | `{r['layer']}` | {r['module'] or '-'} | {r['op']} | {f[m]:.4f} | "
                     f"{f['output_sqnr_db']:.1f} | {q[m]:.4f} | {q['output_sqnr_db']:.1f} | "
                     f"{q['activation_sqnr_db']:.1f} |")
    return "\n".join(lines) + "\n"


def _chart(report: dict[str, Any], path: Path, top: int = 30) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"][:top]
    labels = [f"{r['layer']} {r['module'][-28:]}".strip() for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.5))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r["float_alone"]["output_sqnr_db"] for r in rows][::-1], 0.4,
            label="only this layer in float")
    ax.barh([y - 0.2 for y in ys], [r["quantized_alone"]["output_sqnr_db"] for r in rows][::-1], 0.4,
            label="only this layer quantised")
    ax.axvline(report["full_int8"]["output_sqnr_db"], color="k", lw=1, ls="--", label="full int8")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.set_xlabel("output SQNR vs fp32 (dB)")
    ax.set_title(f"int8 sensitivity ({report['frames']} held-out frames, {report['method']})")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explain_int8(model: str, calib_data: str | Path, out: str | Path, target: str = "onnx",
                 **options: Any) -> dict[str, Any]:
    """Export MODEL to int8 with the sensitivity report and return it (also in OUT/quant_report.json)."""
    from .api import export

    export(model, target, "int8", out, calib_data=calib_data, explain=True, **options)
    return json.loads((Path(out) / FILES[0]).read_text())
