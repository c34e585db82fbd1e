"""The probes behind three int8 tooling figures in README.md (session 7), kept so they can be rerun.

    ort-ops MODEL.onnx [--float-resize]   ONNX Runtime's profiler, 1 thread, 20 runs: kernel time per op type.
                                          --float-resize first rewrites the graph so that every DequantizeLinear ->
                                          Resize -> QuantizeLinear runs its Resize in float (the QuantizeLinear's
                                          scale nudged by 1e-6 so ORT does not fuse the three into an int8 Resize)
    tflite-calib SIZE FRAMES              seconds of the TFLite int8 job's full-model calibration of a random
                                          U-Net-ResNet50, CALIB_BATCH 8 frames a call vs 1

Run from the repo root with .venv/bin/python. Figures depend on what else runs: README.md says under which load
each was taken.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNS = 20


def float_resize(src: Path, dst: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    initializers = {i.name: i for i in model.graph.initializer}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        quantize = readers[node.output[0]][0]
        scale = numpy_helper.to_array(initializers[quantize.input[1]])
        nudged = numpy_helper.from_array((scale * np.float32(1 + 1e-6)).astype(np.float32),
                                         quantize.input[1] + "_nofuse")
        model.graph.initializer.append(nudged)
        quantize.input[1] = nudged.name
    onnx.save(model, str(dst))


def ort_ops(path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(RUNS):
        session.run(None, {spec.name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"].get("op_name")] += e["dur"]
    total = sum(per_op.values())
    for op, us in per_op.most_common(12):
        print(f"{op:24s} {us / RUNS / 1000:7.2f} ms  {100 * us / total:5.1f} %")
    print(f"{'total':24s} {total / RUNS / 1000:7.2f} ms")


def tflite_calib(size: int, count: int) -> None:
    import torch

    from pocus_edge.export import tflite_mixed
    from pocus_edge.models.registry import create_model
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root: tests/ is not installed
    from tests.test_tflite_mixed import _bare_job  # the job with only what calibration needs

    torch.manual_seed(0)
    model = create_model("segmentation", "resnet50", 1, None)
    rng = np.random.default_rng(0)
    frames = [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(count)]
    for batch in (tflite_mixed.CALIB_BATCH, 1):
        tflite_mixed.CALIB_BATCH = batch
        job = _bare_job(model, frames)
        start = time.perf_counter()
        job.full()
        print(f"{size} px, {count} frames, {batch} a call: {time.perf_counter() - start:.1f} s (prepare, calibrate, "
              "convert)")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["ort-ops"] and len(args) in (2, 3):
        path = Path(args[1])
        if args[2:] == ["--float-resize"]:
            path = Path(tempfile.mkdtemp()) / "float-resize.onnx"
            float_resize(Path(args[1]), path)
        ort_ops(path)
    elif args[:1] == ["tflite-calib"] and len(args) == 3:
        tflite_calib(int(args[1]), int(args[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
