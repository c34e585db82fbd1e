"""`pocus bench suite FILE.yaml`: a declared matrix -> bundles (exported or reused), latency, parity,
baselines, JSON rows, a Markdown report and PNG plots. `benchmarks/suite.yaml` is the project's own.

Suite file keys: out, image_size, calib_data, models {name: MODEL}, targets {target: [precisions]},
threads [..], warmup, runs, baselines (true/false), and optionally parity_data (labelled folder) with
references {name: checkpoint} for ground-truth parity. calib_data and parity_data are one folder for every
model or a mapping {name: folder}, for suites whose models come from different data sets. calib_data calibrates
the precisions that calibrate (targets.py) and is the export parity set of the others.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..runtime.manifest import BundleError, verify_bundle

log = logging.getLogger(__name__)
RUNS_HERE = {"onnx", "tflite", "tensorrt"}  # tensorrt kits run their ONNX through ONNX Runtime here


def load_suite(path: Path) -> dict[str, Any]:
    import yaml

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such suite file")
    suite = yaml.safe_load(Path(path).read_text()) or {}
    for key in ("out", "models", "targets"):
        if key not in suite:
            raise ConfigError(f"{path}: suite needs '{key}'")
    suite.setdefault("threads", [1])
    suite.setdefault("warmup", 5)
    suite.setdefault("runs", 30)
    return suite


def per_model(suite: dict, key: str, name: str) -> str | None:
    """suite[key] for model `name`: one value for all models, or the model's entry of a mapping."""
    value = suite.get(key)
    return value.get(name) if isinstance(value, dict) else value


def _bundle(suite: dict, name: str, model: str, target: str, precision: str) -> Path:
    """Reuse a valid bundle exported from the same model file by this pocus-edge version, else export it."""
    from .. import __version__
    from ..export import export
    from ..export.targets import TARGETS, canonical_target
    from ..io import sha256_file

    out = Path(suite["out"]) / "bundles" / f"{name}-{target}-{precision}"
    expected = sha256_file(Path(model)) if Path(model).is_file() else None
    try:
        manifest = verify_bundle(out)
        same_exporter = manifest["tool_versions"].get("pocus-edge") == __version__
        if manifest["source"]["sha256"] == expected and manifest["precision"] == precision and same_exporter:
            return out
    except BundleError:
        pass
    log.info("exporting %s to %s %s", name, target, precision)
    frames = per_model(suite, "calib_data", name)  # calibration for int8; parity frames where nothing calibrates
    data = {"calib_data" if TARGETS[canonical_target(target)].calibrates(precision) else "parity_data": frames}
    export(model, target, precision, out, image_size=suite.get("image_size"), num_parity=suite.get("num_parity", 32),
           overwrite=True, **data)
    return out


STAGES = ("latency", "parity")


def run_suite(path: Path, only: str | None = None) -> dict[str, Any]:
    """Run the suite; `only` runs one stage and keeps the other's previous results (rows files in `out`)."""
    from .baselines import measure_baselines
    from .latency import measure_latency
    from .parity import bench_parity
    from .plots import plot_latency, plot_size_vs_quality
    from .report import latency_table, parity_table
    from .rows import LatencyRow, ParityRow, read_rows, write_rows

    if only is not None and only not in STAGES:
        raise ConfigError(f"--only {only!r}: choose one of {', '.join(STAGES)}")
    suite = load_suite(path)
    out = Path(suite["out"])
    if only == "parity" and not (suite.get("references") and suite.get("parity_data")):
        raise ConfigError(f"{path}: the parity stage needs 'parity_data' and 'references' in the suite file")
    bundles: dict[str, list[Path]] = {}
    for name, model in suite["models"].items():
        for target, precisions in suite["targets"].items():
            for precision in precisions:
                bundles.setdefault(name, []).append(_bundle(suite, name, str(model), target, precision))
    manifests = {str(p): verify_bundle(p) for ps in bundles.values() for p in ps}  # each checked once here
    rows: list[LatencyRow] = []
    parity_rows: list[ParityRow] = []
    for name, paths in bundles.items():
        runnable = [p for p in paths if manifests[str(p)]["target"] in RUNS_HERE]
        if only != "parity":
            rows += measure_latency(runnable, suite["threads"], suite["warmup"], suite["runs"],
                                    command=f"pocus bench suite {path}", backend=None if all(
                                        manifests[str(p)]["target"] != "tensorrt" for p in runnable) else "onnxruntime")
            if suite.get("baselines", True):
                rows += measure_baselines(str(suite["models"][name]), suite.get("image_size"), suite["threads"],
                                          suite["warmup"], suite["runs"])
        reference = (suite.get("references") or {}).get(name)
        parity_data = per_model(suite, "parity_data", name)
        if only != "latency" and reference and parity_data:
            parity_rows += bench_parity(runnable, Path(reference), Path(parity_data))
    if only == "parity":
        rows = read_rows(out / "latency.json") if (out / "latency.json").is_file() else []
    else:
        write_rows(out / "latency.json", rows)
    if only == "latency" and (out / "parity.json").is_file():
        parity_file = out / "parity.json"
        parity_rows = [ParityRow.from_json(r, f"{parity_file} row {k}")
                       for k, r in enumerate(json.loads(parity_file.read_text()).get("rows", []), 1)]
    else:
        atomic_write_json(out / "parity.json", {"rows": [r.to_json() for r in parity_rows]})
    if rows:
        plot_latency(rows, out / "latency_by_precision.png")
    plot_size_vs_quality(manifests, parity_rows, out / "size_vs_quality.png")
    report = "# Benchmark suite\n\n" + latency_table(rows)
    if parity_rows:
        report += "\n\n## Accuracy: each bundle vs PyTorch fp32 and vs ground truth\n\n" + parity_table(parity_rows)
    atomic_write_text(out / "report.md", report)
    return {"rows": len(rows), "parity_rows": len(parity_rows), "out": str(out)}
