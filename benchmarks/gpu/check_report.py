"""check.json and check.md of benchmarks/gpu/check.py: the report dict written whole, JSON and Markdown."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_report(report: dict, out: Path, stem: str) -> None:
    """JSON and Markdown side by side, each written whole (a run cut short leaves the last complete phase)."""
    out.mkdir(parents=True, exist_ok=True)
    for path, text in ((out / f"{stem}.json", json.dumps(report, indent=2) + "\n"),
                       (out / f"{stem}.md", markdown(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _cell(run: dict, key: str, fmt: str = "{}") -> str:
    value = run.get(key)
    return "–" if value is None else fmt.format(value)


def _peak(report: dict) -> str:
    peak, measured = report.get("peak_tflops"), report.get("matmul_bf16_tflops")
    text = f"{peak} TFLOP/s ({report.get('peak_source', 'given')})" if peak else "none (CPU)"
    return text + (f"; a bf16 8192^3 matmul ran at {measured} TFLOP/s here" if measured else "")


def markdown(report: dict) -> str:
    env, setup, flops = report["environment"], report["setup"], report.get("flops") or {}
    title = "GPU check (dry run on CPU, CI size: not a measurement)" if report["dry_run"] else "GPU check"
    lines = [f"# {title}", "",
             f"`{report['command']}` on {env.get('gpu', env['device'])}, torch {env['torch']}, timm {env['timm']}, "
             f"{report['created_at']}, commit {env.get('git_commit') or 'unknown'}.", "",
             f"{setup['teacher']} (random weights) -> {setup['student']}, {setup['image_size']} px, objective "
             f"{setup['objective']}, bf16 autocast, global batch {setup['global_batch']} = micro-batch "
             f"{setup['micro_batch']} x {setup['accum_steps']} accumulation steps; synthetic inputs already on the "
             "device (no data loading).", ""]
    if flops:
        lines += [f"FLOPs per image and training step: {flops['train_step_per_image'] / 1e9:.1f} GFLOP (teacher "
                  f"forward {flops['teacher_forward_per_image'] / 1e9:.1f}), torch.utils.flop_counter on one "
                  f"micro-batch; bf16 peak used: {_peak(report)}.", ""]
    lines += ["| run | status | images/s | step (s) | TFLOP/s | share of peak | peak memory (GiB) | first step (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        memory = run.get("peak_gpu_memory_gib", run.get("peak_host_rss_gib"))
        share = run.get("share_of_bf16_peak")
        lines.append(f"| {run['name']} | {run['status']} | {_cell(run, 'images_per_s')} | {_cell(run, 'step_s')} | "
                     f"{_cell(run, 'tflops')} | {'–' if share is None else f'{100 * share:.1f} %'} | "
                     f"{'–' if memory is None else memory} | {_cell(run, 'first_step_s')} |")
    notes = [f"- {run['name']}: {run['reason']}" for run in report["runs"] if run.get("reason")]
    if notes:
        lines += ["", *notes]
    lines += ["", f"Elapsed: {report.get('elapsed_s')} s. Regenerate: `bash benchmarks/gpu/check.sh` (see its header).",
              ""]
    return "\n".join(lines)
