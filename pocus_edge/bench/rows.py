"""Typed benchmark rows: the one definition of a latency row (`pocus-bench-row/1`) and of a `bench parity` row.

Every producer builds its rows here (host runs in latency.py, baselines.py, Core ML reports, TFLite benchmark_model
text) and every reader goes through `from_json` (`bench import` of android_demo JSON, rows files, the suite), which
refuses a missing or unknown field, a wrong type or a NaN/inf with one line naming the field and the file. A value
that was not measured is null, never NaN: producers pass undefined statistics through `finite_or_none`.

row.schema.json (JSON Schema 2020-12) is generated from these dataclasses, validation and schema reading the same
field metadata: `python -m pocus_edge.bench.rows` rewrites it, a test checks the committed file is current, and
android_demo's JVM tests validate the app's row against it.

A row also reads as its JSON document (`row["latency_ms"]["p50"]`, a read-only Mapping), so plots and code written
against rows files keep working on typed rows; new code uses the attributes.
"""

from __future__ import annotations

import copy
import json
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..errors import PocusError

ROW_SCHEMA = "pocus-bench-row/1"
SCHEMA_PATH = Path(__file__).with_name("row.schema.json")
_FIX = "rows follow pocus_edge/bench/row.schema.json"
_SCALARS = (str, int, float, bool, type(None))


class BenchRowError(PocusError, ValueError):
    """A benchmark row that does not follow row.schema.json (a ValueError too, as validate_row raised before)."""


def finite_or_none(value: float | None) -> float | None:
    """An undefined statistic (NaN/inf, e.g. a failed cold-start run or the CV of a zero mean) as None."""
    return None if value is None or not math.isfinite(value) else value


def _field(doc: str, *, optional: bool = False, omit_if_null: bool = False, **schema: Any) -> Any:
    """A row field: its description and extra JSON Schema keywords (minimum, pattern, properties, ...), which
    validation enforces too. Optional fields default to null; `omit_if_null` ones are left out of the JSON then."""
    meta = {"doc": doc, "schema": schema, "omit_if_null": omit_if_null}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


def _split(hint: Any) -> tuple[Any, bool]:
    """(base type, nullable) of `X` or `X | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _json_type(value: Any) -> str:
    return {bool: "boolean", str: "string", int: "integer", float: "number", dict: "object", list: "array",
            type(None): "null"}.get(type(value), type(value).__name__)


class _Record(Mapping[str, Any]):
    """Shared machinery of the row dataclasses: typed validation, JSON in and out, JSON Schema, Mapping view."""

    TAG: ClassVar[tuple[str, str] | None] = None  # ("schema", "pocus-bench-row/1"): a constant first key

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f, hint in self._hints():
            object.__setattr__(self, f.name, _check(getattr(self, f.name), hint, f, f.name, name))
        self._check_record(name)

    def _check_record(self, source: str) -> None:
        """Rules across fields (subclasses)."""

    @classmethod
    def _hints(cls) -> list[tuple[Any, Any]]:
        hints = typing.get_type_hints(cls)
        return [(f, hints[f.name]) for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Any, source: str = "row", prefix: str = "") -> Any:
        """The record of a JSON object; BenchRowError naming `source` and the field when it does not fit."""
        if not isinstance(data, dict):
            raise BenchRowError(f"{source}: {prefix.rstrip('.') or 'the row'} is {_json_type(data)}, expected an "
                                f"object; {_FIX}")
        known = {f.name for f in fields(cls)} | ({cls.TAG[0]} if cls.TAG else set())  # type: ignore[arg-type]
        for f in ([cls.TAG[0]] if cls.TAG else []) + [f.name for f in fields(cls) if _required(f)]:  # type: ignore
            if f not in data:
                raise BenchRowError(f"{source}: lacks field {prefix + f!r}; {_FIX}")
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise BenchRowError(f"{source}: unknown field {prefix + str(unknown[0])!r} in {cls.__name__}; {_FIX}")
        if cls.TAG and data[cls.TAG[0]] != cls.TAG[1]:
            raise BenchRowError(f"{source}: schema {data[cls.TAG[0]]!r} is not {cls.TAG[1]}; {_FIX}")
        values = {f.name: _check(data.get(f.name), hint, f, prefix + f.name, source) for f, hint in cls._hints()}
        record = cls(**values)
        record._check_record(source)
        return record

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the tag first, then every field in order (null where not measured)."""
        out: dict[str, Any] = {self.TAG[0]: self.TAG[1]} if self.TAG else {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata["omit_if_null"]:
                continue
            out[f.name] = value.to_json() if isinstance(value, _Record) else copy.deepcopy(value)
        return out

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """This record's JSON Schema (objects in $defs are referenced by class name)."""
        props: dict[str, Any] = {}
        required = []
        if cls.TAG:
            props[cls.TAG[0]] = {"const": cls.TAG[1], "description": "The row format and its version."}
            required.append(cls.TAG[0])
        for f, hint in cls._hints():
            props[f.name] = _field_schema(f, hint)
            if _required(f):
                required.append(f.name)
        return {"type": "object", "description": " ".join((cls.__doc__ or "").split()), "properties": props,
                "required": required, "additionalProperties": False}

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def _required(f: Any) -> bool:
    return f.default is MISSING


def _field_schema(f: Any, hint: Any) -> dict[str, Any]:
    base, nullable = _split(hint)
    if isinstance(base, type) and issubclass(base, _Record):
        return {"$ref": f"#/$defs/{base.__name__}", "description": f.metadata["doc"]}
    name = {str: "string", int: "integer", float: "number"}.get(base, "object")
    return {"type": [name, "null"] if nullable else name, "description": f.metadata["doc"], **f.metadata["schema"]}


def _bad(source: str, where: str, problem: str) -> BenchRowError:
    return BenchRowError(f"{source}: field {where!r} {problem}; {_FIX}")


def _check(value: Any, hint: Any, f: Any, where: str, source: str) -> Any:
    """`value` checked against the field's type and schema keywords (nested records built from objects)."""
    base, nullable = _split(hint)
    if value is None:
        if nullable:
            return None
        raise _bad(source, where, "is null; it is required")
    if isinstance(base, type) and issubclass(base, _Record):
        return value if isinstance(value, base) else base.from_json(value, source, where + ".")
    kind = typing.get_origin(base) or base
    ok = {str: isinstance(value, str), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), dict: isinstance(value, dict)}
    if not ok[kind]:
        expected = {str: "a string", int: "an integer", float: "a number", dict: "an object"}[kind]
        raise _bad(source, where, f"is {value!r} ({_json_type(value)}); expected {expected}"
                                  f"{' or null' if nullable else ''}")
    _check_finite(value, where, source)
    schema = f.metadata["schema"]
    if "minimum" in schema and value < schema["minimum"]:
        raise _bad(source, where, f"is {value!r}; must be >= {schema['minimum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise _bad(source, where, f"is {value!r}; must match {schema['pattern']}")
    if isinstance(value, dict):
        _check_object(value, schema, where, source)
    return value


def _check_finite(value: Any, where: str, source: str) -> None:
    """No NaN/inf anywhere in a value (JSON has none: a value that was not measured is null)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(source, where, f"is {value}; write null for a value that was not measured")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _bad(source, where, f"has a non-string key {k!r}")
            _check_finite(v, f"{where}.{k}", source)
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            _check_finite(v, f"{where}[{k}]", source)


def _check_object(value: dict, schema: dict, where: str, source: str) -> None:
    """The `required`, scalar `properties` and `additionalProperties` keywords of an object field (device)."""
    for key in schema.get("required", []):
        if key not in value:
            raise _bad(source, where, f"lacks {key!r}")
    props = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    for key, v in value.items():
        rule = props.get(key, additional)
        if rule is True:
            continue
        allowed = rule["type"] if isinstance(rule["type"], list) else [rule["type"]]
        kind = _json_type(v)
        if kind not in allowed and not (kind == "integer" and "number" in allowed):
            raise _bad(source, f"{where}.{key}", f"is {v!r} ({kind}); expected {' or '.join(allowed)}")
        if "minLength" in rule and len(v) < rule["minLength"]:
            raise _bad(source, f"{where}.{key}", "is empty")


_TEXT = {"type": ["string", "null"]}
_DEVICE: dict[str, Any] = {"required": ["label"], "properties": {
    "label": {"type": "string", "minLength": 1, "description": "What tables show: host, host emulation: NAME, or "
                                                                 "the device's name"},
    "kind": {"type": "string", "description": "host | host-emulation | device | android"},
    "name": _TEXT, "cpu": _TEXT, "cores": {"type": ["integer", "null"]}, "os": _TEXT, "python": _TEXT,
    "profile": _TEXT, "note": _TEXT, "model": _TEXT, "soc": _TEXT, "android": _TEXT},
    "additionalProperties": {"type": ["string", "number", "boolean", "null"]}}


@dataclass(frozen=True, kw_only=True)
class LatencyMs(_Record):
    """Latency per call in milliseconds: percentiles (linear interpolation), mean, population std, min, max; null
    where the measuring tool does not report it (TFLite benchmark_model has no percentiles)."""

    p10: float | None = _field("10th percentile (ms), the lower end of the plots' error bars", optional=True, minimum=0)
    p50: float | None = _field("median (ms)", minimum=0)
    p90: float | None = _field("90th percentile (ms)", minimum=0)
    p99: float | None = _field("99th percentile (ms)", minimum=0)
    mean: float = _field("mean (ms)", minimum=0)
    std: float | None = _field("population standard deviation (ms)", optional=True, minimum=0)
    min: float | None = _field("fastest call (ms)", optional=True, minimum=0)
    max: float | None = _field("slowest call (ms)", optional=True, minimum=0)


@dataclass(frozen=True, kw_only=True)
class LatencyRow(_Record):
    """One latency measurement (pocus-bench-row/1) of a model x target x precision x backend x threads on one
    device: host runs, baselines, Core ML reports, TFLite benchmark_model text and the android_demo app."""

    TAG: ClassVar[tuple[str, str] | None] = ("schema", ROW_SCHEMA)

    bundle: str | None = _field("Bundle folder (or the TFLite graph) measured; null for a baseline", optional=True)
    model: str = _field("Model name (the manifest's name)")
    task: str = _field("segmentation | classification | embedding, or unknown for imported text")
    target: str = _field("Export target (onnx, tflite, coreml, tensorrt) or baseline")
    precision: str = _field("fp32 | fp16 | int8 ..., or unknown for imported text")
    backend: str = _field("Runtime that ran the model, e.g. onnxruntime, litert xnnpack, coreml (ALL)")
    threads: int | None = _field("Inference threads; null where the runtime does not set them", minimum=1)
    batch: int = _field("Frames per call", minimum=1)
    device: dict[str, Any] = _field("The machine measured on; its label keeps phone, host and host emulation "
                                    "apart", **_DEVICE)
    profile: str | None = _field("Host-emulation profile (phone, tablet, jetson, cart) or null", optional=True)
    warmup: int | None = _field("Untimed calls before timing", optional=True, minimum=0)
    runs: int | None = _field("Timed calls; null where the tool does not report the count", minimum=1)
    latency_ms: LatencyMs = _field("Latency statistics per call (ms)")
    cv: float | None = _field("Coefficient of variation of the timings (std / mean, a fraction)", minimum=0)
    fps: float | None = _field("Frames per second at the median (batch x 1000 / p50; from the mean for imported "
                               "text)", minimum=0)
    file_size_mb: float | None = _field("Model file size (MB, 10^6 bytes)", optional=True, minimum=0)
    flops: float | None = _field("FLOPs of one forward pass at batch 1 (2 x multiply-adds)", optional=True, minimum=0)
    gflops_per_s: float | None = _field("Achieved GFLOP/s at the median latency", optional=True, minimum=0)
    model_sha256: str | None = _field("First 16 hex digits of the model file's sha256", optional=True)
    source: str = _field("measured, or imported: FILE (where the numbers came from)")
    date: str = _field("When measured (ISO 8601 date or date-time)", pattern=r"^\d{4}-\d{2}-\d{2}")
    command: str | None = _field("The command that measured it", optional=True)
    cold_start_ms: float | None = _field("Load + first inference in a fresh process (ms)", optional=True, minimum=0)
    peak_rss_mb: float | None = _field("Peak resident memory of that process (MB)", optional=True, minimum=0)
    compute_placement: dict[str, Any] | None = _field("Core ML: ops and estimated cost share per compute unit",
                                                      optional=True)


@dataclass(frozen=True, kw_only=True)
class ParityRow(_Record):
    """One `bench parity` result: a bundle's agreement with PyTorch fp32 on the same frames, its ground-truth
    metrics, the fp32 reference's, and the change (dice_change for segmentation, accuracy_change otherwise)."""

    bundle: str = _field("Bundle folder")
    target: str = _field("Export target")
    precision: str = _field("Precision of the bundle")
    backend: str = _field("Runtime that ran the bundle")
    images: int = _field("Frames compared", minimum=0)
    split: str = _field("test | val | train | all")
    agreement: dict[str, Any] = _field("Agreement with PyTorch fp32 (dice_mean, dice_min or top1_agreement, ...)")
    ground_truth: dict[str, Any] = _field("The bundle's ground-truth metrics")
    reference_ground_truth: dict[str, Any] = _field("The fp32 checkpoint's ground-truth metrics")
    dice_change: float | None = _field("Dice of the bundle minus the reference's (segmentation)", optional=True,
                                       omit_if_null=True)
    accuracy_change: float | None = _field("Accuracy of the bundle minus the reference's (classification)",
                                           optional=True, omit_if_null=True)

    def _check_record(self, source: str) -> None:
        if self.dice_change is not None and self.accuracy_change is not None:
            raise BenchRowError(f"{source}: a parity row has dice_change or accuracy_change, not both; {_FIX}")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a rows file {"schema": "pocus-bench-row/1", "rows": [...]}, with each row type
    in $defs (ParityRow: the rows of parity.json and `bench parity --json`)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"{ROW_SCHEMA} rows file",
            "description": "Generated from pocus_edge/bench/rows.py by `python -m pocus_edge.bench.rows`; edit the "
                           "dataclasses, not this file.",
            "type": "object", "properties": {"schema": {"const": ROW_SCHEMA},
                                             "rows": {"type": "array", "items": {"$ref": "#/$defs/LatencyRow"}}},
            "required": ["schema", "rows"], "additionalProperties": False,
            "$defs": {cls.__name__: cls.json_schema() for cls in (LatencyRow, LatencyMs, ParityRow)}}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def as_latency_row(row: LatencyRow | Mapping[str, Any], source: str = "row") -> LatencyRow:
    return row if isinstance(row, LatencyRow) else LatencyRow.from_json(dict(row), source)


def rows_document(rows: Sequence[LatencyRow | Mapping[str, Any]]) -> dict[str, Any]:
    """{"schema": ..., "rows": [...]}: the file `bench latency --json`, the suite and `bench import` write."""
    return {"schema": ROW_SCHEMA, "rows": [as_latency_row(r, f"row {k}").to_json() for k, r in enumerate(rows, 1)]}


def write_rows(path: Path, rows: Sequence[LatencyRow | Mapping[str, Any]]) -> None:
    from ..io import atomic_write_json

    atomic_write_json(Path(path), rows_document(rows))


def read_rows(path: Path) -> list[LatencyRow]:
    """The rows of a rows file (or a bare list of rows), each validated."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchRowError(f"{path}: cannot read a rows file ({exc}); {_FIX}")
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise BenchRowError(f"{path}: no 'rows' list; {_FIX}")
    return [LatencyRow.from_json(r, f"{path} row {k}") for k, r in enumerate(rows, 1)]


def validate_row(row: Mapping[str, Any], source: str = "result row") -> None:
    """Raise BenchRowError (a ValueError) naming the first missing or malformed field of a JSON row."""
    LatencyRow.from_json(dict(row) if not isinstance(row, dict) else row, source)


if __name__ == "__main__":  # regenerate the committed schema
    SCHEMA_PATH.write_text(schema_text())
    print(f"wrote {SCHEMA_PATH}")
