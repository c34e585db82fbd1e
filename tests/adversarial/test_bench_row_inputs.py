"""Bad rows in an android_demo JSON file given to `pocus bench import`: each is refused with one line naming the file,
the row and the field, and the committed JSON Schema refuses the same row (validation and schema in lock-step)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from test_bench_rows import android_row

from pocus_edge.bench.importers import import_file
from pocus_edge.bench.rows import ROW_SCHEMA, SCHEMA_PATH, BenchRowError

LAT = android_row()["latency_ms"]
DEVICE = android_row()["device"]


def _without(key):
    row = android_row()
    del row[key]
    return row


CASES = [
    ("missing-task", _without("task"), "lacks field 'task'"),
    ("missing-schema", _without("schema"), "lacks field 'schema'"),
    ("other-schema", android_row(schema="pocus-bench-row/2"), "schema 'pocus-bench-row/2' is not pocus-bench-row/1"),
    ("unknown-field", android_row(gpu="Mali"), "unknown field 'gpu' in LatencyRow"),
    ("threads-as-text", android_row(threads="4"), "field 'threads' is '4' (string); expected an integer or null"),
    ("threads-as-bool", android_row(threads=True), "field 'threads' is True (boolean)"),
    ("batch-zero", android_row(batch=0), "field 'batch' is 0; must be >= 1"),
    ("runs-fractional", android_row(runs=99.5), "field 'runs' is 99.5 (number); expected an integer"),
    ("model-null", android_row(model=None), "field 'model' is null; it is required"),
    ("negative-latency", android_row(latency_ms={**LAT, "p90": -1.0}), "field 'latency_ms.p90' is -1.0; must be >= 0"),
    ("latency-unknown-key", android_row(latency_ms={**LAT, "p95": 44.0}),
     "unknown field 'latency_ms.p95' in LatencyMs"),
    ("latency-missing-mean", android_row(latency_ms={k: v for k, v in LAT.items() if k != "mean"}),
     "lacks field 'latency_ms.mean'"),
    ("latency-not-object", android_row(latency_ms=[40.1]), "latency_ms is array, expected an object"),
    ("device-without-label", android_row(device={"kind": "android"}), "field 'device' lacks 'label'"),
    ("device-empty-label", android_row(device={**DEVICE, "label": ""}), "field 'device.label' is empty"),
    ("device-cores-text", android_row(device={**DEVICE, "cores": "8"}), "field 'device.cores' is '8' (string)"),
    ("device-nested-extra", android_row(device={**DEVICE, "extra": {"a": 1}}), "field 'device.extra' is {'a': 1}"),
    ("date-not-iso", android_row(date="20/11/2026"), "field 'date' is '20/11/2026'; must match"),
    ("placement-a-list", android_row(compute_placement=[1]), "field 'compute_placement' is [1] (array)"),
    ("row-not-object", "a row", "the row is string, expected an object"),
]


@pytest.mark.parametrize("row,message", [pytest.param(r, m, id=i) for i, r, m in CASES])
def test_bad_android_row_is_refused_naming_file_row_and_field(tmp_path, row, message):
    path = tmp_path / "phone.json"
    path.write_text(json.dumps({"schema": ROW_SCHEMA, "rows": [android_row(), row]}))
    with pytest.raises(BenchRowError) as info:
        import_file(path)
    assert str(info.value).startswith(f"{path} row 2: ") and message in str(info.value)
    assert "row.schema.json" in str(info.value)  # what to do: follow the schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(
            {"schema": ROW_SCHEMA, "rows": [row]})


@pytest.mark.parametrize("text,message", [
    pytest.param(json.dumps(android_row()).replace('"cv": 0.03', '"cv": NaN'), "field 'cv' is nan; write null",
                 id="nan-cv"),
    pytest.param(json.dumps(android_row()).replace('"max": 47.5', '"max": Infinity'),
                 "field 'latency_ms.max' is inf; write null", id="infinite-max"),
    pytest.param('{"schema": "pocus-bench-row/1", "rows": {"a": 1}}', "'rows' is not a list", id="rows-not-list"),
])
def test_non_json_numbers_and_shapes_are_refused(tmp_path, text, message):
    """Java's Json.write prints NaN for an undefined double; Python's json reads it. Neither may become a number."""
    path = tmp_path / "phone.json"
    path.write_text(text)
    with pytest.raises(BenchRowError, match=message):
        import_file(path)
