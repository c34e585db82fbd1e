#!/usr/bin/env python3
"""Build a TensorRT engine from a pocus-edge build kit's ONNX. Needs only `tensorrt` (no torch, no pocus-edge).

Shipped inside every tensorrt bundle as build_engine.py, and used by the runtime to build and cache an
engine on first load. Engines are specific to the GPU and the TensorRT version, which is why the kit
carries the ONNX and this builder rather than an engine built elsewhere.

    python build_engine.py BUNDLE_DIR [--out model.engine] [--workspace-gb 4] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_engine(onnx_path: Path, engine_path: Path, precision: str, input_name: str, input_shape: list,
                 max_batch: int = 8, workspace_gb: float = 4.0, timing_cache: Path | None = None) -> Path:
    """Parse the ONNX, set precision flags and an optimization profile, build and write the engine."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the ONNX's Q/DQ nodes
    _, c, h, w = input_shape
    if isinstance(input_shape[0], str):  # dynamic batch: one optimization profile 1..max_batch
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, (1, c, h, w), (max(1, max_batch // 2), c, h, w), (max_batch, c, h, w))
        config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    tmp = Path(str(engine_path) + ".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    if timing_cache:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return Path(engine_path)


def build_from_bundle(bundle: Path, out: Path | None = None, max_batch: int = 8, workspace_gb: float = 4.0) -> Path:
    """Read the bundle's manifest and build its engine next to it (or at `out`)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    return build_engine(bundle / manifest["model_file"], out or bundle / "model.engine", manifest["precision"],
                        spec["name"], spec["shape"], max_batch, workspace_gb, bundle / "timing.cache")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workspace-gb", type=float, default=4.0)
    args = parser.parse_args()
    try:
        path = build_from_bundle(args.bundle, args.out, args.max_batch, args.workspace_gb)
    except ImportError:
        print("error: the tensorrt Python package is not installed on this machine", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
