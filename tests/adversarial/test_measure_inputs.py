"""Bad inputs to measurements (issue 17 section 2): each case is one bad value and the exact refusal.

Spacing and measurement names are refused as ConfigError naming the argument; masks that cannot be measured as
ValueError; the CLI turns each into one `error:` line with exit 2 and writes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from pocus_edge.errors import ConfigError
from pocus_edge.runtime.measure import measure_mask, parse_measurements, parse_spacing

from .test_cli_usage import assert_one_error_line, run_pocus

BAD_SPACING = [0, -0.2, float("nan"), float("inf"), "abc", "0.1,0.2,0.3", "", "0.2mm", (0.2, 0), [], "1e400",
               ("0.2", None), True, (True, 0.2), object(), {"row": 0.2}]


@pytest.mark.parametrize("value", BAD_SPACING,
                         ids=[repr(v) if type(v) is not object else "object()" for v in BAD_SPACING])
def test_bad_spacing_is_refused_naming_the_argument(value):
    with pytest.raises(ConfigError, match=r"^--pixel-spacing .*: give the pixel spacing in mm as one positive "
                                          r"number or ROW,COL"):
        parse_spacing(value, "--pixel-spacing")


@pytest.mark.parametrize("value", ["volume", "area,volume", "ellipse;area", ["area", 3]])
def test_unknown_measurement_names_are_refused(value):
    with pytest.raises(ConfigError, match=r"^--measurements .*unknown measurement\(s\) .*choose from area, "
                                          r"ellipse \(comma-separated\) or none"):
        parse_measurements(value)


BAD_MASKS = [
    (np.zeros((4, 4, 3)), "expected a 2-D mask, got shape \\(4, 4, 3\\)"),
    (np.zeros(5), "expected a 2-D mask, got shape \\(5,\\)"),
    (np.array([[0.0, np.nan], [1.0, 0.0]]), "finite float mask, got float64"),
    (np.array([[0.0, np.inf]]), "finite float mask"),
    (np.array([["a", "b"]]), "got <U1"),
]


@pytest.mark.parametrize(("mask", "match"), BAD_MASKS, ids=["3-D", "1-D", "nan", "inf", "strings"])
def test_masks_that_cannot_be_measured(mask, match):
    with pytest.raises(ValueError, match=match):
        measure_mask(mask, 0.2)


@pytest.mark.parametrize("shape", [(0, 0), (0, 7), (5, 0)])
def test_zero_size_masks_hold_no_structure(shape):
    result = measure_mask(np.zeros(shape, bool), (0.1, 0.1))
    assert result["status"] == "no_structure" and result["ellipse"] is None


CLI_CASES = [
    (["predict", "b", "x.png", "--pixel-spacing", "0"], ["--pixel-spacing '0'", "one positive number or ROW,COL"]),
    (["predict", "b", "x.png", "--pixel-spacing", "0.2;0.3"], ["--pixel-spacing '0.2;0.3'"]),
    (["export", "unet-resnet50", "-t", "onnx", "--measurements", "volume"],
     ["--measurements 'volume'", "unknown measurement(s) volume"]),
    (["export", "classifier-resnet50", "-t", "onnx", "--image-size", "64", "--measurements", "ellipse"],
     ["--measurements ellipse: a classification model has no mask to measure"]),
    (["eval", "missing-model", "--data", "d", "--measure", "area"], ["--measure 'area': choose ellipse"]),
]


@pytest.mark.parametrize(("args", "expected"), CLI_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CLI_CASES])
def test_cli_refusals_are_one_line_and_write_nothing(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    code, _, err = run_pocus(args + ["--out", str(tmp_path / "out")], capsys)
    assert_one_error_line(code, err, *expected)
    assert set(tmp_path.iterdir()) == before
