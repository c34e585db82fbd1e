"""Broken reference vectors in a re-sealed bundle (a broken build pipeline or an attacker who recomputes the digest):
each case is one bad edit of reference/ and the exact refusal of `pocus verify` / `load(verify=True)`. Vectors
edited without re-sealing fail the bundle digest (tests/test_selftest.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pocus_edge.cli import _run, app
from pocus_edge.runtime import load
from pocus_edge.runtime.integrity import seal
from pocus_edge.runtime.manifest import file_digest
from pocus_edge.runtime.selftest import SelfTestError

INDEX = "reference/vectors.json"


def _index(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        index = json.loads((bundle / INDEX).read_text())
        edit(index)
        (bundle / INDEX).write_text(json.dumps(index))
    return apply


def _truncate(name: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / name).write_bytes((bundle / name).read_bytes()[:-4])


def _nan_outputs(bundle: Path) -> None:
    data = np.frombuffer((bundle / "reference/output.bin").read_bytes(), "<f4").copy()
    data[:] = np.nan
    (bundle / "reference/output.bin").write_bytes(data.tobytes())


CASES = [
    ("unknown-format", _index(lambda i: i.update(format="pocus-reference-vectors/9")), SelfTestError,
     r"reference vectors unreadable \(format 'pocus-reference-vectors/9', expected 'pocus-reference-vectors/1'\)"),
    ("not-json", lambda b: (b / INDEX).write_text("{"), SelfTestError, r"reference vectors unreadable \(Expecting"),
    ("truncated-output", _truncate("reference/output.bin"), SelfTestError,
     r"output.bin holds 16380 bytes, shape \[4, 1, 32, 32\] float32 needs 16384"),
    ("truncated-input", _truncate("reference/input.bin"), SelfTestError, r"input.bin holds 49148 bytes"),
    ("file-outside-folder", _index(lambda i: i["input"].update(file="../manifest.json")), SelfTestError,
     r"file '../manifest.json' points outside the bundle's reference/ folder"),
    ("frame-dropped", _index(lambda i: i["frames"].pop()), SelfTestError, r"frame, input and output counts differ"),
    ("frame-without-name", _index(lambda i: i["frames"][2].pop("name")), SelfTestError,
     r"every frame and the output need a name"),
    ("two-outputs", _index(lambda i: i["outputs"].append(i["outputs"][0])), SelfTestError,
     r"one output is supported"),
    ("input-dtype-not-the-models", _index(lambda i: i["input"].update(dtype="int8", shape=[4, 3, 32, 64, 2])),
     SelfTestError, r"input dtype int8 differs from the manifest's float32"),
    ("expected-outputs-nan", _nan_outputs, SelfTestError, r"frame 0 .*raw_max_abs nan > "),
    ("tolerance-missing", _index(lambda i: i.pop("tolerance")), SelfTestError,
     r"unreadable \(field 'tolerance' missing or not a JSON object\)"),
    ("limit-missing", _index(lambda i: i["tolerance"].pop("dice_min")), SelfTestError,
     r"tolerance dice_min is 'absent', not a number or null"),
    ("limit-a-string", _index(lambda i: i["tolerance"].update(raw_max_abs="0.1")), SelfTestError,
     r"tolerance raw_max_abs is '0.1', not a number or null"),
    ("probability-limit-null", _index(lambda i: i["tolerance"].update(prob_max_abs=None)), SelfTestError,
     r"tolerance prob_max_abs is null: nothing would judge a segmentation model's outputs"),
]


def _reseal(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in list(manifest["files"]):
        manifest["files"][name] = file_digest(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    seal(bundle)


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    from test_selftest import tiny_export

    mp = pytest.MonkeyPatch()
    try:
        out = tmp_path_factory.mktemp("vectors") / "good"
        tiny_export(out, mp)
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("name,edit,error,message", CASES, ids=[c[0] for c in CASES])
def test_broken_vectors_are_refused(name, edit, error, message, good_bundle, tmp_path, capsys):
    bundle = shutil.copytree(good_bundle, tmp_path / name)
    edit(bundle)
    _reseal(bundle)
    load(bundle)  # the digest verifies: only the self-test can refuse it
    with pytest.raises(error, match=message):
        load(bundle, verify=True)
    with pytest.raises(SystemExit) as exit_info:
        _run(app, ["verify", str(bundle)])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code in (1, 2) and "Traceback" not in err
