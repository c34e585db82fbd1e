"""Adversarial Core ML int8 requests: --calib-data is taken only with --activations int8 (W8A8), which needs it.

Each case is one request through the public `export()` and the exact refusal, before anything is built.
"""

from __future__ import annotations

import re

import pytest

from pocus_edge.errors import ConfigError

CASES = [
    # (options, expected message: a regex)
    ({"calib_data": "frames"}, r"^--calib-data frames: Core ML int8 quantises only the weights unless its activations "
     r"are quantised too; parity frames go to --parity-data DIR; drop it or add --activations int8$"),
    ({"calib_data": "frames", "activations": "float"}, r"^--calib-data frames: .*drop it or add --activations int8$"),
    ({"activations": "int8"}, r"^--activations int8: activation ranges are calibrated on real frames; drop it or add "
     r"--calib-data DIR$"),
    ({"activations": "int8", "calib_data": None}, r"^--activations int8: .*add --calib-data DIR$"),
    ({"activations": "int4", "calib_data": "frames"}, r"^--activations 'int4': choose float or int8 for coreml int8$"),
    ({"activations": True, "calib_data": "frames"}, r"^--activations True: choose float or int8"),
    ({"activations": "int8", "calib_data": "frames", "palettize": 4},
     r"^--palettize 4 \(coreml fp32/fp16 only\) does not apply to coreml int8"),
]


def _built(*args, **kwargs):
    raise AssertionError("export built something before validating its options")


@pytest.fixture
def tripwire(monkeypatch):
    """Building the model, loading a converter or making the work folder before validation fails the test."""
    from pocus_edge.export import api

    for name in ("resolve_model", "target_module", "make_workdir"):
        monkeypatch.setattr(api, name, _built)


@pytest.mark.parametrize("options,expected", CASES, ids=[repr(o) for o, _ in CASES])
def test_coreml_int8_calibration_requests_are_refused(options, expected, tripwire, tmp_path):
    from pocus_edge.export import export

    with pytest.raises(ConfigError) as err:
        export("unet-resnet50", "coreml", "int8", tmp_path / "bundle", image_size=64, **options)
    assert re.search(expected, str(err.value)), str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision,options", [("fp32", {"activations": "int8"}), ("fp16", {"activations": "float"})])
def test_activations_is_for_int8_only(precision, options, tripwire, tmp_path):
    from pocus_edge.export import export

    with pytest.raises(ConfigError, match=rf"--activations \S+ \(coreml int8 only\) does not apply to coreml "
                                          rf"{precision}"):
        export("unet-resnet50", "coreml", precision, tmp_path / "bundle", image_size=64, **options)


def test_w8a8_without_held_out_frames_asks_for_parity_data(tmp_path, monkeypatch):
    """W8A8 calibrates, so its parity must be on held-out real frames: a folder too small to split is an error."""
    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.export import export

    folder = write_phantom_dataset(tmp_path / "one", 1, size=(64, 64), seed=3)
    with pytest.raises(ConfigError, match=r"int8 parity needs real frames the quantiser never saw.*--parity-data"):
        export("unet-resnet18", "coreml", "int8", tmp_path / "bundle", image_size=32, calib_data=folder,
               activations="int8")
    assert not (tmp_path / "bundle").exists()
