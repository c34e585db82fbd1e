"""Reference vectors for the on-device self-test, written at export after parity (runtime/selftest.py reads them).

A few frames of the parity set (`--reference-frames`, default 4, evenly spaced) are pre-processed exactly as the
runtime feeds the model (layout, dtype, quantisation) and stored with the exported model's raw outputs on them,
computed by the target's parity backend through the runtime (so the vectors test the file on the device against
the same file on the host, not against PyTorch), and the tolerances of the precision. Where this machine cannot
run the target (Core ML on Linux) PyTorch's outputs of the converted model are recorded instead, with looser
tolerances, and vectors.json says so. Files: reference/vectors.json, reference/input.bin, reference/output.bin
(raw little-endian arrays, the shapes and dtypes in the index); the manifest lists them and the digest covers them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ConfigError
from ..io import atomic_write, atomic_write_json, sha256_file
from ..runtime.postprocess import softmax
from ..runtime.preprocess import model_input
from ..runtime.selftest import DTYPES, FOLDER, FORMAT, INDEX, tolerance_for
from .base import ExportError, version_of
from .data import ImageSet
from .targets import TARGETS

MOST = 64  # frames at most: the vectors stay small enough for an app's assets
INPUT_FILE, OUTPUT_FILE = "input.bin", "output.bin"


def check_reference_frames(count: Any) -> int:
    """--reference-frames: an integer 1..64 (checked before anything is built)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MOST:
        raise ConfigError(f"--reference-frames {count!r}: give a whole number from 1 to {MOST} (frames of the parity "
                          "set stored in the bundle for the self-test; default 4)")
    return count


def pick(frames: ImageSet, count: int) -> list[int]:
    """Indices of `count` frames spread evenly over the parity set (all of them when it holds fewer)."""
    n = len(frames.images)
    if n <= count:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, count)})


def write_reference_vectors(workdir: Path, manifest: dict[str, Any], frames: ImageSet, count: int, model: Any,
                            skip_reason: str | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Write reference/ into the (sealed, loadable) work folder; return {file: sha256} and the manifest summary.

    `model`: the converted torch model (PyTorch's outputs are recorded only when `skip_reason` says this machine
    cannot run the target)."""
    chosen = pick(frames, count)
    if not chosen:
        raise ConfigError("reference vectors: the parity set is empty; give --parity-data DIR with frames")
    inputs = [model_input([frames.images[i]], manifest) for i in chosen]
    engine = "pytorch" if skip_reason else TARGETS[manifest["target"]].parity_backend
    outputs = _pytorch_outputs(model, inputs, manifest) if skip_reason else _runtime_outputs(workdir, inputs, engine)
    expected = np.concatenate(outputs)
    spec_out = manifest["outputs"][0]
    if list(spec_out["shape"][1:]) != list(expected.shape[1:]):
        raise ExportError(f"reference vectors: {engine} gave outputs of shape {list(expected.shape[1:])} per frame, "
                          f"the manifest says {spec_out['shape'][1:]}; the exported model does not match its manifest")
    integer_output = str(expected.dtype) in ("int8", "uint8")
    loose = skip_reason is not None or manifest["target"] == "tensorrt"
    index = {
        "format": FORMAT, "task": manifest["task"], "target": manifest["target"],
        "precision": manifest["precision"], "pocus_edge": __version__,
        "frames": [{"index": k, "name": frames.names[i], "sha256": _frame_sha256(frames.images[i])}
                   for k, i in enumerate(chosen)],
        "input": _array_entry(INPUT_FILE, manifest["inputs"][0], np.concatenate(inputs)),
        "outputs": [{**_array_entry(OUTPUT_FILE, spec_out, expected),
                     "activation": manifest["postprocessing"]["activation"],
                     "threshold": manifest["postprocessing"].get("threshold")}],
        "expected_from": _provenance(engine, skip_reason, manifest["target"]),
        "tolerance": tolerance_for(manifest["precision"], integer_output, expected, loose),
    }
    folder = Path(workdir) / FOLDER
    folder.mkdir(exist_ok=True)
    for name, array in ((INPUT_FILE, np.concatenate(inputs)), (OUTPUT_FILE, expected)):
        data = np.ascontiguousarray(array).astype(DTYPES[str(array.dtype)]).tobytes()
        atomic_write(folder / name, lambda p, data=data: Path(p).write_bytes(data))
    atomic_write_json(Path(workdir) / INDEX, index)
    files = {f"{FOLDER}/{n}": sha256_file(folder / n) for n in (INPUT_FILE, OUTPUT_FILE, "vectors.json")}
    summary = {"index": INDEX, "frames": len(chosen), "expected_from": engine}
    return files, summary


def _array_entry(file: str, spec: dict[str, Any], array: np.ndarray) -> dict[str, Any]:
    entry = {"file": file, "name": spec["name"], "dtype": str(array.dtype), "shape": list(array.shape),
             "layout": spec.get("layout", "NCHW"), "byte_order": "little"}
    if spec.get("quantization"):
        entry["quantization"] = spec["quantization"]
    return entry


def _runtime_outputs(workdir: Path, inputs: list[np.ndarray], backend: str) -> list[np.ndarray]:
    """The exported file's raw outputs through the runtime's parity backend (batch 1, as on a device)."""
    from ..runtime import load

    predictor = load(workdir, backend=backend)
    return [np.asarray(predictor.run_model(x)) for x in inputs]


def _pytorch_outputs(model: Any, inputs: list[np.ndarray], manifest: dict[str, Any]) -> list[np.ndarray]:
    """The converted torch model on the stored inputs (softmax added where the target's output is probabilities)."""
    from ..models.inference import torch_outputs

    probabilities = manifest["outputs"][0]["meaning"] == "probabilities"
    outs = [torch_outputs(model, x) for x in inputs]
    return [softmax(y, axis=1) if probabilities else y for y in outs]


def _provenance(engine: str, skip_reason: str | None, target: str) -> dict[str, Any]:
    if skip_reason:
        note = (f"PyTorch's outputs of the converted model, not the exported file's: {skip_reason}. Tolerances are "
                "loosened accordingly")
        return {"engine": "pytorch", "versions": {"torch": version_of("torch")}, "note": note}
    package = {"onnxruntime": "onnxruntime", "tflite": "ai-edge-litert"}.get(engine, engine)
    note = "the exported file run through the runtime's parity backend on the exporting host"
    if target == "tensorrt":
        note += "; the kit's ONNX, not the engine built on the device, so tolerances are loosened"
    return {"engine": engine, "versions": {package: version_of(package)}, "note": note}


def _frame_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
