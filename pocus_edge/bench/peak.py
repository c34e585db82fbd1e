"""`pocus bench peak`: this host's achievable fp32 and int8 GEMM throughput, to state results as a fraction of it.

fp32: numpy matmul (the BLAS numpy links) with its thread pool limited through threadpoolctl.
int8: ONNX Runtime's MatMulInteger (u8 x s8 -> s32, the kernel family int8 convolutions use) in a one-node
graph built on the fly. Both report the best of several runs as GFLOP/s (2 x M x N x K per product).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fp32_gemm(threads: int, size: int = 1024, repeats: int = 5) -> float:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    with threadpool_limits(limits=threads):
        seconds = _best_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def int8_gemm(threads: int, size: int = 1024, repeats: int = 5) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (size, size), dtype=np.uint8),
             "b": rng.integers(-127, 127, (size, size), dtype=np.int8)}
    del onnx
    seconds = _best_seconds(lambda: session.run(None, feeds), repeats)
    return 2 * size**3 / seconds / 1e9


def measure_peak(threads: list[int]) -> list[dict[str, Any]]:
    """[{threads, fp32_gflops, int8_gops}] for each thread count."""
    return [{"threads": t, "fp32_gemm_gflops": fp32_gemm(t), "int8_gemm_gops": int8_gemm(t)} for t in threads]
