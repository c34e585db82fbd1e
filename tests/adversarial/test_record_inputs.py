"""Bad model-record options (issue 17 section 4): each case is one bad --intended-use / --license / --record value
and the exact refusal, raised before any model is built; through the CLI it is one `error:` line and no bundle."""

from __future__ import annotations

import pytest

from pocus_edge.errors import ConfigError
from pocus_edge.export.record import pop_record_options

from .test_cli_usage import assert_one_error_line, run_pocus

ALLOWED = ("allowed: intended_use (text); limitations (text or a list of texts); out_of_scope (text or a list of "
           "texts); license (text (the model's licence)); contact (text); data_licenses (a mapping FOLDER: licence "
           "text)")

FLAG_CASES = [
    ({"intended_use": ""}, "--intended-use: expected non-empty text, got ''; give the text or drop the option"),
    ({"intended_use": "   "}, "--intended-use: expected non-empty text, got '   '; give the text or drop the option"),
    ({"license": ""}, "--license: expected non-empty text, got ''; give the text or drop the option"),
]


@pytest.mark.parametrize("given,message", FLAG_CASES, ids=["empty-use", "blank-use", "empty-license"])
def test_bad_flags(given, message):
    with pytest.raises(ConfigError) as exc:
        pop_record_options({"record": None, **given})
    assert str(exc.value) == message


YAML_CASES = [  # (file bytes or None for no file, "dir" for a folder, the message after "--record PATH: ")
    (None, "no such file; give a YAML file with any of intended_use, limitations, out_of_scope, license, contact, "
           "data_licenses"),
    ("dir", "is not a file; give a YAML file"),
    (b"- a\n- b\n", "expected a mapping with any of intended_use, limitations"),
    (b"", "expected a mapping with any of"),
    (b"intnded_use: x\n", f"unknown key(s) intnded_use; {ALLOWED}"),
    (b"intended_use: 3\n", "intended_use: expected non-empty text, got 3"),
    (b"intended_use: ''\n", "intended_use: expected non-empty text, got ''"),
    (b"limitations: [ok, 5]\n", "limitations: expected non-empty text, got 5"),
    (b"license: {a: b}\n", "license: expected non-empty text, got {'a': 'b'}"),
    (b"data_licenses: [a]\n", "data_licenses must be a mapping FOLDER: licence text"),
    (b"data_licenses: {busi: null}\n", "data_licenses busi: expected non-empty text, got None"),
    (b"intended_use: [\n", "not valid UTF-8 YAML"),
    (b"intended_use: \xff\xfe\n", "not valid UTF-8 YAML"),
]


@pytest.mark.parametrize("content,message", YAML_CASES, ids=[
    "missing", "folder", "list", "empty", "unknown-key", "number", "empty-text", "list-item", "mapping-licence",
    "licences-list", "licence-null", "bad-yaml", "not-utf8"])
def test_bad_record_yaml(tmp_path, content, message):
    path = tmp_path / "record.yaml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        pop_record_options({"record": path})
    assert str(exc.value).startswith(f"--record {path}: {message}"), str(exc.value)


def test_cli_refuses_before_building_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "bundle"
    code, _, err = run_pocus(["export", "unet-resnet18", "-t", "onnx", "--out", out, "--intended-use", ""], capsys)
    assert_one_error_line(code, err, "--intended-use: expected non-empty text, got ''")
    assert not out.exists() and list(tmp_path.iterdir()) == []
