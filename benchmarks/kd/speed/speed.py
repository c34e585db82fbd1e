"""Where a phone-class U-Net's int8 latency goes, and which design is >= 5x faster than the R50 teacher (issue 14).

Latency does not depend on weight values, so every model here is randomly initialised (BatchNorm re-randomised so
no branch folds away, DESIGN.md) and saved in the ordinary `pocus finetune` checkpoint format (save_task_model,
card kind task_model), then exported with the project's own `pocus-export` (see run_speed.sh for the commands).

Subcommands:
  checkpoints OUT                 random task_model checkpoints of every CANDIDATES row -> OUT/<name>/model.safetensors
  ops BUNDLE...                   op census of each int8 .tflite (op x output dtype; float ops = fallbacks)
  profile BUNDLE...               ONNX Runtime per-node profile of int8 ONNX bundles, by op type and by model part
  table LATENCY_JSON --teacher N  teacher p50 / candidate p50 for every row of one interleaved `pocus bench latency`
  paired TEACHER BUNDLE...        teacher and each candidate alternated in pairs; ratios of wall and thread CPU time
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path
from types import SimpleNamespace

SLIM = (48, 32, 24, 16, 8)
# name -> (timm architecture, decoder widths deepest first or None for the registry default)
CANDIDATES: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "teacher-r50": ("resnet50", None),                            # smp default decoder 256,128,64,32,16
    "mnv3l-slim": ("mobilenetv3_large_100", None),                # registry default: 48,32,24,16,8
    "mnv3s-slim": ("mobilenetv3_small_100", None),
    "effb0-slim": ("efficientnet_b0", None),
    "r18-slim": ("resnet18", SLIM),
    "mnv3l-narrow": ("mobilenetv3_large_100", (24, 16, 16, 8, 8)),
    "r18-narrow": ("resnet18", (24, 16, 16, 8, 8)),
}


def write_checkpoints(out: Path, names: list[str] | None = None) -> None:
    """One random-weight task_model checkpoint per candidate, exactly as `pocus finetune` writes them."""
    import torch

    from pocus_edge.finetune.model import save_task_model
    from pocus_edge.models.registry import BUILTIN_LABELS, create_model, default_decoder_channels
    from pocus_edge.models.tasks import randomize_batchnorm

    for name in names or list(CANDIDATES):
        arch, decoder = CANDIDATES[name]
        torch.manual_seed(0)
        net = randomize_batchnorm(create_model("segmentation", arch, 1, decoder), seed=0).eval()
        cfg = SimpleNamespace(task="segmentation", architecture=arch, image_size=128, linear_probe=False,
                              label_fraction=1.0)
        widths = list(decoder or default_decoder_channels(arch))
        init = {"origin": "random init (benchmarks/kd/speed: latency only)", "init_sha256": None,
                "decoder_channels": widths, "smoke_test_only": True, "name": f"unet-{name}"}
        (out / name).mkdir(parents=True, exist_ok=True)
        save_task_model(out / name / "model.safetensors", net, cfg, list(BUILTIN_LABELS["segmentation"]), init)
        print(f"{name}: {arch} decoder {widths} -> {out / name / 'model.safetensors'}")


def op_census(path: Path) -> tuple[int, collections.Counter]:
    """(number of ops, Counter of (op name, output dtype)) of a .tflite file, read with the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only op list the Python wheel exposes
    return len(ops), collections.Counter((o["op_name"], dtypes.get(o["outputs"][0], "?")) for o in ops)


def print_ops(bundles: list[Path]) -> None:
    censuses = {b.name: op_census(b / "model.tflite") for b in bundles}
    keys = sorted({k for _, c in censuses.values() for k in c}, key=lambda k: (k[1] != "float32", k))
    print("| op (output dtype) | " + " | ".join(censuses) + " |")
    print("|---" * (len(censuses) + 1) + "|")
    print("| **all ops** | " + " | ".join(str(n) for n, _ in censuses.values()) + " |")
    float_ops = [sum(v for (op, dt), v in c.items() if dt == "float32" and op != "DEQUANTIZE")
                 for _, c in censuses.values()]
    print("| **float compute ops (fallbacks)** | " + " | ".join(map(str, float_ops)) + " |")
    for op, dt in keys:
        print(f"| {op} ({dt}) | " + " | ".join(str(c.get((op, dt), "")) for _, c in censuses.values()) + " |")


def _part(module: str) -> str:
    """Model part of a torch module path (encoder / decoder block i / segmentation head)."""
    m = re.match(r"decoder\.blocks\.(\d+)", module)
    if m:
        return f"decoder block {m.group(1)}"
    for prefix, part in (("encoder", "encoder"), ("decoder", "decoder (other)"), ("segmentation_head", "head")):
        if module.startswith(prefix):
            return part
    return ""


def _node_parts(onnx_path: Path) -> dict[str, str]:
    """ONNX node name (and output tensor name) -> model part, from the exporter's `pocus.module` metadata."""
    import onnx

    parts: dict[str, str] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        module = next((p.value for p in node.metadata_props if p.key == "pocus.module"), "")
        if _part(module):
            parts[node.name] = _part(module)
            parts.update({t: _part(module) for t in node.output})
    return parts


def _event_part(name: str, parts: dict[str, str], previous: str) -> str:
    """Part of a profiled node: its own name, its name without ORT's `_token_N`, the tensor a Q/DQ node
    (de)quantises, else the part of the node ORT ran just before (fused nodes lose their metadata)."""
    base = re.sub(r"_token_\d+$", "", name)
    tensor = re.sub(r"_(Dequantize|Quantize)Linear$", "", base)
    return parts.get(name) or parts.get(base) or parts.get(tensor) or previous


def ort_profile(bundle: Path, runs: int = 50) -> dict:
    """Per-node kernel times of an ONNX bundle at 1 thread (ORT's profiler), summed over `runs` runs."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path("/tmp") / f"ortprof-{bundle.name}")
    sess = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape],
                 dtype=np.float32 if "float" in inp.type else np.int8)
    for _ in range(5 + runs):
        sess.run(None, {inp.name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    parts = _node_parts(bundle / "model.onnx")
    by_op: collections.Counter = collections.Counter()
    by_part: collections.Counter = collections.Counter()
    part = "encoder"  # the graph input's quantisation and layout transpose run first
    for e in nodes:
        part = _event_part(e["name"].removesuffix("_kernel_time"), parts, part)
        by_op[e["args"]["op_name"]] += e["dur"]
        by_part[part] += e["dur"]
    total = sum(by_op.values())
    runs_seen = max(1, len(nodes) // max(1, len({e["name"] for e in nodes})))
    return {"bundle": bundle.name, "runs": runs_seen, "kernel_ms_per_run": total / 1000 / runs_seen,
            "nodes_per_run": len({e["name"] for e in nodes}),
            "by_op_type_pct": {k: 100 * v / total for k, v in by_op.most_common()},
            "by_part_pct": {k: 100 * v / total for k, v in sorted(by_part.items())}}


def print_profiles(bundles: list[Path], out: Path | None) -> None:
    results = [ort_profile(b) for b in bundles]
    if out:
        out.write_text(json.dumps(results, indent=2))
    for r in results:
        print(f"\n### {r['bundle']}: {r['kernel_ms_per_run']:.2f} ms kernel time per run, "
              f"{r['nodes_per_run']} nodes (ORT CPU, 1 thread, mean of {r['runs']} runs)\n")
        print("| model part | % of kernel time |\n|---|---|")
        for k, v in sorted(r["by_part_pct"].items(), key=lambda kv: (kv[0] != "encoder", kv[0])):
            print(f"| {k} | {v:.1f} |")
        print("\n| op type | % of kernel time |\n|---|---|")
        for k, v in list(r["by_op_type_pct"].items())[:10]:
            print(f"| {k} | {v:.1f} |")


def paired_times(teacher: Path, candidate: Path, runs: int, warmup: int = 10) -> dict[str, dict[str, float]]:
    """Teacher and candidate alternated run by run (each evicts the other from the caches alike): p10/p50/p90 of
    wall time and of the calling thread's CPU time (1 thread: the interpreter runs on it). CPU time leaves out time
    the scheduler gave to other processes; on a loaded VM it still counts shared caches and steal."""
    import time

    import numpy as np

    from pocus_edge.runtime import load

    predictors = {"teacher": load(teacher, threads=1), "candidate": load(candidate, threads=1)}
    inputs = {n: p.preprocess([np.zeros((256, 256), np.uint8)])[0] for n, p in predictors.items()}
    samples: dict[str, list[float]] = {f"{n}_{k}": [] for n in predictors for k in ("wall", "cpu")}
    for i in range(warmup + runs):
        for name, predictor in predictors.items():
            w, c = time.perf_counter_ns(), time.thread_time_ns()
            predictor.run_model(inputs[name])
            if i >= warmup:
                samples[f"{name}_cpu"].append((time.thread_time_ns() - c) / 1e6)
                samples[f"{name}_wall"].append((time.perf_counter_ns() - w) / 1e6)
    return {k: {q: float(np.percentile(v, int(q[1:]))) for q in ("p10", "p50", "p90")} for k, v in samples.items()}


def print_paired_table(teacher: Path, bundles: list[Path], runs: int, out: Path | None) -> None:
    """One teacher-vs-candidate pair at a time; ratio = teacher p50 / candidate p50 within the pair."""
    results = {b.name: paired_times(teacher, b, runs) for b in bundles}
    if out:
        out.write_text(json.dumps({"teacher": str(teacher), "runs": runs, "pairs": results}, indent=2))
    print("| candidate | teacher CPU ms p50 | candidate CPU ms p10 / p50 / p90 | **ratio CPU p50** | "
          "teacher wall ms p50 | candidate wall ms p50 | ratio wall p50 |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        tc, cc, tw, cw = r["teacher_cpu"], r["candidate_cpu"], r["teacher_wall"], r["candidate_wall"]
        print(f"| {name} | {tc['p50']:.2f} | {cc['p10']:.2f} / {cc['p50']:.2f} / {cc['p90']:.2f} | "
              f"**{tc['p50'] / cc['p50']:.2f}x** | {tw['p50']:.2f} | {cw['p50']:.2f} | {tw['p50'] / cw['p50']:.2f}x |")


def print_table(latency_json: Path, teacher: str) -> None:
    """Ratios against the teacher row of the same interleaved run (same threads, same image size)."""
    data = json.loads(latency_json.read_text())
    rows = {Path(r["bundle"]).name: r for r in (data["rows"] if isinstance(data, dict) else data)}
    base = rows[teacher]["latency_ms"]["p50"]
    print(f"| bundle | GFLOP | p50 ms | p90 ms | CV | GFLOP/s | ratio: {teacher} p50 / p50 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lat, flops = r["latency_ms"], r.get("flops")
        print(f"| {name} | {flops / 1e9 if flops else float('nan'):.2f} | {lat['p50']:.2f} | {lat['p90']:.2f} | "
              f"{100 * r['cv']:.0f}% | {r.get('gflops_per_s') or float('nan'):.0f} | **{base / lat['p50']:.2f}x** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("checkpoints")
    p.add_argument("out", type=Path)
    p.add_argument("--only", nargs="*")
    p = sub.add_parser("ops")
    p.add_argument("bundles", nargs="+", type=Path)
    p = sub.add_parser("profile")
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--json", type=Path)
    p = sub.add_parser("paired")
    p.add_argument("teacher", type=Path)
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--json", type=Path)
    p = sub.add_parser("table")
    p.add_argument("latency_json", type=Path)
    p.add_argument("--teacher", required=True)
    args = parser.parse_args()
    if args.cmd == "checkpoints":
        write_checkpoints(args.out, args.only)
    elif args.cmd == "ops":
        print_ops(args.bundles)
    elif args.cmd == "paired":
        print_paired_table(args.teacher, args.bundles, args.runs, args.json)
    elif args.cmd == "profile":
        print_profiles(args.bundles, args.json)
    else:
        print_table(args.latency_json, args.teacher)


if __name__ == "__main__":
    main()
