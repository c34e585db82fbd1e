"""Self-test of a bundle on the machine that runs it: its reference vectors in, pass or fail out (torch-free).

At export (export/reference.py) a few real frames of the parity set are stored as the model sees them
(`reference/input.bin`: the pre-processed, laid-out, quantised input, little-endian), with the exported model's
raw outputs on them as the host's parity backend computed them (`reference/output.bin`) and the tolerances of
the bundle's precision (`reference/vectors.json`); the bundle digest covers all three. `run_selftest` feeds the
stored inputs to this machine's backend, twice each, and compares per frame:
- raw_max_abs: max |actual - expected| of the raw output (logits; quantised units for an integer output);
- prob_max_abs: the same after the manifest's activation (sigmoid/softmax probabilities);
- dice_min: Dice of the thresholded (binary) or argmax (multi-class, mean over foreground classes) masks at model
  resolution, two empty masks agree; cosine_min: cosine similarity of embeddings.
A limit of null is reported, not judged. The Android core (SelfTest.java) implements the same comparison on the
same files. A model file swapped for another (re-sealed) bundle passes the digest but fails here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import BundleError
from .postprocess import activate, mask_dice, to_mask
from .results import output_as_float

FORMAT = "pocus-reference-vectors/1"
FOLDER = "reference"
INDEX = f"{FOLDER}/vectors.json"
DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "i1", "uint8": "u1"}
# precision -> raw (atol, rtol x max|expected|) on float outputs, raw limit in quantised units on integer outputs,
# prob_max_abs, dice_min, cosine_min. Host and device run the same file on different kernels (x86 vs ARM, XNNPACK,
# NNAPI): fp32 differs in the last bits, fp16 by its 10-bit mantissa, int8 by a rounding step per layer.
TOLERANCES: dict[str, tuple[float | None, float | None, int | None, float, float, float]] = {
    "fp32": (1e-4, 1e-4, 1, 1e-3, 0.99, 0.99999),
    "fp16": (1e-2, 1e-2, 2, 2e-2, 0.98, 0.999),
    "int8": (None, None, 3, 0.1, 0.90, 0.99),
}
# expected outputs that are not this file on the host's engine (Core ML on Linux: PyTorch's outputs; TensorRT:
# the kit's ONNX, the engine is built on the device): no raw limit, looser probabilities and masks
LOOSE: dict[str, tuple[float, float, float]] = {"fp32": (0.05, 0.95, 0.999), "fp16": (0.05, 0.95, 0.999),
                                                "int8": (0.15, 0.85, 0.98)}
LIMITS = ("raw_max_abs", "prob_max_abs", "dice_min", "cosine_min")
NO_VECTORS = ("carries no reference vectors ({index}); it was exported before bundles carried them, so nothing "
              "can check that the model behaves on this machine as it did at export. Re-export it with pocus-export")


class SelfTestError(BundleError):
    """The bundle's model does not reproduce its reference vectors here, or the bundle carries none."""


def tolerance_for(precision: str, integer_output: bool, expected: np.ndarray, loose: bool) -> dict[str, Any]:
    """The limits written into vectors.json for this precision (concrete numbers: Java reads them as they are)."""
    atol, rtol, units, prob, dice, cosine = TOLERANCES[precision]
    if loose:
        prob, dice, cosine = LOOSE[precision]
        raw, rule = None, f"{precision}, loosened: the expected outputs are not this file on the device's engine"
    elif integer_output:
        raw, rule = float(units or 0), f"{precision}: raw output within {units} quantised units"
    elif atol is None or rtol is None:
        raw, rule = None, f"{precision}: judged in probability space (no raw limit on float outputs)"
    else:
        scale = float(np.max(np.abs(expected.astype(np.float64)))) if expected.size else 0.0
        raw = atol + rtol * scale
        rule = f"{precision}: |raw difference| <= {atol:g} + {rtol:g} x max|expected| ({scale:.4g})"
    units_name = "quantized units" if integer_output else "output units"
    return {"raw_max_abs": raw, "raw_units": units_name, "prob_max_abs": prob, "dice_min": dice,
            "cosine_min": cosine, "rule": rule}


@dataclass
class Vectors:
    """A bundle's reference vectors: the index, the stored inputs (N x per-frame shape) and expected outputs."""

    index: dict[str, Any]
    inputs: np.ndarray
    expected: np.ndarray

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.index["frames"]]


def read_vectors(bundle_dir: Path, manifest: dict[str, Any]) -> Vectors:
    """Load BUNDLE/reference/ (call after the bundle's digest was verified); SelfTestError when absent or malformed."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / INDEX
    if not path.is_file():
        raise SelfTestError(f"{bundle_dir}: {NO_VECTORS.format(index=INDEX)}")
    try:
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"format {index.get('format')!r}, expected {FORMAT!r}")
        _check_index(index, manifest["task"])
        inputs = _read_array(bundle_dir, index["input"])
        expected = _read_array(bundle_dir, index["outputs"][0])
        if not len(index["frames"]) == len(inputs) == len(expected) >= 1:
            raise ValueError("frame, input and output counts differ")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise SelfTestError(f"{path}: reference vectors unreadable ({exc}); re-export the bundle")
    if str(inputs.dtype) != manifest["inputs"][0]["dtype"]:
        raise SelfTestError(f"{path}: input dtype {inputs.dtype} differs from the manifest's "
                            f"{manifest['inputs'][0]['dtype']}; re-export the bundle")
    return Vectors(index, inputs, expected)


def _check_index(index: dict[str, Any], task: str) -> None:
    """The fields the comparison reads, and limits that judge something: a missing limit must not pass silently."""
    for key, kind in (("frames", list), ("input", dict), ("outputs", list), ("expected_from", dict),
                      ("tolerance", dict)):
        if not isinstance(index.get(key), kind):
            raise ValueError(f"field {key!r} missing or not a JSON {'array' if kind is list else 'object'}")
    if len(index["outputs"]) != 1 or not isinstance(index["outputs"][0], dict):
        raise ValueError("one output is supported")
    named = [*index["frames"], index["outputs"][0]]
    if not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in named):
        raise ValueError("every frame and the output need a name")
    tolerance = index["tolerance"]
    for key in LIMITS:
        limit = tolerance.get(key, "absent")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                  or not np.isfinite(limit)):
            raise ValueError(f"tolerance {key} is {limit!r}, not a number or null")
    needed = "cosine_min" if task == "embedding" else "prob_max_abs"
    if tolerance[needed] is None:
        raise ValueError(f"tolerance {needed} is null: nothing would judge a {task} model's outputs")


def _read_array(bundle_dir: Path, spec: dict[str, Any]) -> np.ndarray:
    name = Path(spec["file"])
    if name.is_absolute() or ".." in name.parts:
        raise ValueError(f"file {spec['file']!r} points outside the bundle's {FOLDER}/ folder")
    data = (bundle_dir / FOLDER / name).read_bytes()
    dtype = np.dtype(DTYPES[spec["dtype"]])
    shape = tuple(int(d) for d in spec["shape"])
    if len(data) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{spec['file']} holds {len(data)} bytes, shape {list(shape)} {spec['dtype']} needs "
                         f"{int(np.prod(shape)) * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def frame_metrics(expected: np.ndarray, actual: np.ndarray, manifest: dict[str, Any]) -> dict[str, float]:
    """The comparison of one frame's raw output (batch 1, as the backend returns it) with the expected one."""
    if actual.shape != expected.shape:
        raise SelfTestError(f"model output shape {list(actual.shape)} differs from the reference "
                            f"{list(expected.shape)}; the model file does not belong to this manifest")
    if not np.isfinite(actual.astype(np.float64)).all():
        return {"raw_max_abs": float("inf"), "prob_max_abs": float("inf"), "dice_min": 0.0, "cosine_min": -1.0}
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    metrics = {"raw_max_abs": float(diff.max()) if diff.size else 0.0}
    e, a = output_as_float(expected, manifest)[0], output_as_float(actual, manifest)[0]
    task, post = manifest["task"], manifest["postprocessing"]
    if task == "embedding":
        norm = max(float(np.linalg.norm(e)) * float(np.linalg.norm(a)), 1e-12)
        metrics["cosine_min"] = float(np.dot(e.reshape(-1).astype(np.float64), a.reshape(-1)) / norm)
        return metrics
    pe, pa = activate(e, post["activation"]), activate(a, post["activation"])
    metrics["prob_max_abs"] = float(np.abs(pe.astype(np.float64) - pa).max())
    if task == "segmentation":
        t = post.get("threshold")
        metrics["dice_min"] = mask_dice(to_mask(pe, t), to_mask(pa, t), pe.shape[0])
    return metrics


def judge(metrics: dict[str, float], tolerance: dict[str, Any]) -> list[str]:
    """Readable failures ('raw_max_abs 0.41 > 0.00031 output units'); a limit of null is not judged."""
    failures = []
    for name, value in metrics.items():
        limit = tolerance.get(name)
        if limit is None:
            continue
        worse = not value >= limit if name.endswith("_min") else not value <= limit  # NaN fails
        if worse:
            sign = "<" if name.endswith("_min") else ">"
            units = f" {tolerance['raw_units']}" if name == "raw_max_abs" else ""
            failures.append(f"{name} {value:.6g} {sign} {limit:.6g}{units}")
    return failures


@dataclass
class FrameCheck:
    index: int
    name: str
    metrics: dict[str, float]
    failures: list[str]
    deterministic: bool


@dataclass
class SelfTestReport:
    """What `pocus verify` prints and `--json` writes: per output the worst value of each metric and its limit."""

    bundle: str
    backend: str
    output: str
    expected_from: dict[str, Any]
    tolerance: dict[str, Any]
    frames: list[FrameCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(not f.failures for f in self.frames)

    @property
    def deterministic(self) -> bool:
        return all(f.deterministic for f in self.frames)

    def worst(self) -> dict[str, dict[str, Any]]:
        names = [k for k in LIMITS if k in self.frames[0].metrics]
        rows = {}
        for name in names:
            values = [f.metrics[name] for f in self.frames]
            value = min(values) if name.endswith("_min") else max(values)
            limit = self.tolerance.get(name)
            rows[name] = {"value": value, "limit": limit, "passed": not judge({name: value}, self.tolerance)}
        return rows

    def lines(self) -> list[str]:
        """The human report of `pocus verify`: the worst value of each metric against its limit."""
        out = [f"self-test of {self.bundle} on {self.backend}: {len(self.frames)} frames, expected outputs from "
               f"{self.expected_from.get('engine')} ({self.tolerance.get('rule')})"]
        for name, row in self.worst().items():
            limit = "not judged" if row["limit"] is None else f"limit {row['limit']:.6g}"
            out.append(f"  {self.output} {name}: {row['value']:.6g} ({limit}) {'ok' if row['passed'] else 'FAILED'}")
        out.append("  run to run: " + ("identical outputs (each frame run twice)" if self.deterministic else
                                       "outputs DIFFER between two runs of the same input"))
        out.append("passed" if self.passed else "FAILED")
        return out

    def failure_line(self) -> str:
        """One line naming the first failing frame and its difference(s); '' when the self-test passed."""
        bad = next((f for f in self.frames if f.failures), None)
        if bad is None:
            return ""
        return (f"self-test failed on {self.backend}: frame {bad.index} ({bad.name}) output {self.output}: "
                f"{'; '.join(bad.failures)} (expected from {self.expected_from.get('engine')}). The model does not "
                "behave as it did at export (a swapped or corrupted model file, or an engine that computes "
                "differently); do not use its results")

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "backend": self.backend, "passed": self.passed,
                "deterministic": self.deterministic, "expected_from": self.expected_from,
                "tolerance": self.tolerance, "outputs": {self.output: self.worst()},
                "frames": [{"index": f.index, "name": f.name, "metrics": f.metrics, "failures": f.failures,
                            "deterministic": f.deterministic} for f in self.frames],
                "failure": self.failure_line() or None}


def run_selftest(predictor: Any) -> SelfTestReport:
    """Run the bundle's reference vectors through `predictor`'s backend (each frame twice) and compare."""
    manifest = predictor.manifest
    vectors = read_vectors(predictor.bundle_dir, manifest)
    index = vectors.index
    report = SelfTestReport(str(predictor.bundle_dir), predictor.backend.name, index["outputs"][0]["name"],
                            index["expected_from"], index["tolerance"])
    for k, name in enumerate(vectors.names):
        x = np.ascontiguousarray(vectors.inputs[k:k + 1])
        first, second = predictor.run_model(x), predictor.run_model(x)
        expected = vectors.expected[k:k + 1]
        runs = [frame_metrics(expected, out, manifest) for out in (first, second)]
        metrics = {m: (min if m.endswith("_min") else max)(r[m] for r in runs) for m in runs[0]}
        report.frames.append(FrameCheck(k, name, metrics, judge(metrics, index["tolerance"]),
                                        bool(np.array_equal(first, second))))
    return report


def require_selftest(predictor: Any) -> SelfTestReport:
    """`run_selftest`, raising SelfTestError with the one-line failure when it does not pass."""
    report = run_selftest(predictor)
    if not report.passed:
        raise SelfTestError(f"{predictor.bundle_dir}: {report.failure_line()}")
    return report
