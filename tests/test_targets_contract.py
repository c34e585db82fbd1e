"""Contract tests generated from the capability table (pocus_edge/export/targets.py), no conversion run.

For every target x precision x option: what the table says a target takes is accepted with each allowed value,
a value outside the allowed ones is refused, and an option the target/precision does not take is refused with
its flag, the target and the precision in the message. The CLI's help, README and the target modules state the
table's facts. Two end-to-end checks through the CLI (in process) show a refused option leaves nothing behind.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from pocus_edge.errors import ConfigError
from pocus_edge.export.targets import (
    ALIASES,
    GIVEN,
    OPTIONS,
    TARGETS,
    Option,
    canonical_target,
    check_precision,
    option_help,
    precision_help,
    resolve_options,
    target_help,
)

REPO = Path(__file__).resolve().parents[1]
PAIRS = [(t, p) for t, spec in TARGETS.items() for p in spec.precisions]
TRIPLES = [(t, p, key) for t, p in PAIRS for key in OPTIONS]
SAMPLE = {"calib_data": "frames/", "num_calib": 50, "accuracy_target": 0.98, "max_float_layers": 3,
          "float_layers": "node_Conv_1"}  # options whose values are checked where they are read
SAMPLE["reference_frames"] = 4  # the self-test's frames (export/reference.py checks 1..64)
SAMPLE.update(intended_use="triage research", record="record.yaml", license="CC-BY-4.0")  # the model record


def _required(target: str, precision: str) -> dict[str, Any]:
    """What a request at (target, precision) must give: the table's required options."""
    return {k: SAMPLE[k] for k, o in TARGETS[target].takes(precision).items() if o.required}


def _accepted_values(option: Option, key: str) -> list[Any]:
    return list(option.values) if option.values is not None else [SAMPLE[key]]


def _set_value(key: str) -> Any:
    """A value that asks for the option (not None, not off): what a target that does not take it must refuse."""
    option = OPTIONS[key]
    return next(v for v in _accepted_values(option, key) if v is not None and v is not False)


def _with_needs(target: str, precision: str, key: str, value: Any) -> dict[str, Any]:
    """The request for key=value plus what the table says that value needs (fold on tflite int8 -> --io float)."""
    option = TARGETS[target].takes(precision)[key]
    request = {**_required(target, precision), key: value}
    if option.needs and (value is option.needs[0] or option.needs[0] is GIVEN) and \
            option.needs[1] in TARGETS[target].takes(precision):
        request[option.needs[1]] = SAMPLE[option.needs[1]] if option.needs[2] is GIVEN else option.needs[2]
    return request


@pytest.mark.parametrize("target,precision", PAIRS)
def test_defaults_come_from_the_table(target, precision):
    takes = TARGETS[target].takes(precision)
    resolved = resolve_options(target, precision, _required(target, precision))
    assert set(resolved) == set(takes)
    for key, option in takes.items():
        expected = SAMPLE[key] if option.required else option.default_for(precision)
        assert resolved[key] == expected, key
        assert expected is None or option.allows(expected), f"{target} {precision} default of {key} not allowed"


@pytest.mark.parametrize("target,precision,key", TRIPLES)
def test_every_option_accepted_or_refused_as_the_table_says(target, precision, key):
    takes = TARGETS[target].takes(precision)
    flag = OPTIONS[key].flag
    if key not in takes:
        with pytest.raises(ConfigError) as err:
            resolve_options(target, precision, {**_required(target, precision), key: _set_value(key)})
        message = str(err.value)
        assert flag in message and f"not apply to {target} {precision}" in message
        for taken in takes.values():  # ... and what it does take
            assert taken.flag in message
        # "off" or "not given" is never refused
        resolve_options(target, precision, {**_required(target, precision), key: None})
        return
    option = takes[key]
    for value in _accepted_values(option, key):
        assert resolve_options(target, precision, _with_needs(target, precision, key, value))[key] == value
    if option.values is not None:
        with pytest.raises(ConfigError, match=f"{flag} 'not-a-value': choose .* for {target} {precision}"):
            resolve_options(target, precision, {**_required(target, precision), key: "not-a-value"})


@pytest.mark.parametrize("target,precision", PAIRS)
def test_calibration_data_only_where_calibration_is_used(target, precision):
    spec = TARGETS[target]
    if spec.calibrates(precision):
        with pytest.raises(ConfigError, match=f"{target} {precision} needs --calib-data DIR"):
            resolve_options(target, precision, {})
    elif "calib_data" in spec.takes(precision):  # only with another option (Core ML int8: --activations int8)
        _, other, value, _ = spec.takes(precision)["calib_data"].needs
        with pytest.raises(ConfigError, match=rf"--calib-data frames/: .*--parity-data DIR; drop it or add "
                                              rf"{OPTIONS[other].shown(value)}"):
            resolve_options(target, precision, {"calib_data": "frames/"})
        assert spec.calibrates(precision, {other: value}) and not spec.calibrates(precision, {})
        resolve_options(target, precision, {"calib_data": "frames/", other: value})
    else:
        with pytest.raises(ConfigError, match=r"--calib-data frames/ .*not apply.*--parity-data DIR"):
            resolve_options(target, precision, {"calib_data": "frames/"})


@pytest.mark.parametrize("target,precision", PAIRS)
def test_needs_are_enforced(target, precision):
    for key, option in TARGETS[target].takes(precision).items():
        if option.needs and option.needs[1] in TARGETS[target].takes(precision):
            value, other, other_value, why = option.needs
            wrong = None if other_value is GIVEN else next(v for v in OPTIONS[other].values if v != other_value)
            with pytest.raises(ConfigError, match=why.split("(")[0]):
                resolve_options(target, precision, {**_required(target, precision), key: value, other: wrong})


def test_unknown_names_are_refused_with_a_hint():
    with pytest.raises(ConfigError, match="'nhcw' unknown. Did you mean 'nhwc'"):
        resolve_options("tflite", "fp32", {"nhcw": True})
    for alias, name in ALIASES.items():
        assert canonical_target(alias.upper()) == name
    with pytest.raises(ConfigError, match="choose one of fp32, fp16, int8"):
        check_precision("onnx", "int4")


def test_one_meaning_per_option_and_parity_backends_exist():
    """A keyword means the same flag on every target; each parity backend can run its target's bundles."""
    from pocus_edge.runtime.backends import COMPATIBLE

    for t in TARGETS.values():
        for key, option in t.options.items():
            assert (option.flag, option.what) == (OPTIONS[key].flag, OPTIONS[key].what)
            assert set(option.precisions) <= set(t.precisions)
        assert t.parity_backend in COMPATIBLE[t.name]


@pytest.mark.parametrize("target", list(TARGETS))
def test_target_modules_follow_the_table(target):
    module = importlib.import_module(f"pocus_edge.export.{target}")
    assert module.NAME == target and tuple(module.PRECISIONS) == TARGETS[target].precisions
    assert callable(module.convert) and callable(module.check_available)


def test_cli_help_is_generated_from_the_table():
    import typer

    from pocus_edge.cli import app

    params = {opt: p for p in typer.main.get_command(app).commands["export"].params for opt in p.opts}
    for key, option in OPTIONS.items():
        assert params[option.flag].help == option_help(key), option.flag
    assert params["--target"].help == target_help() and params["--precision"].help == precision_help()
    assert option_help("io").startswith("tflite int8 only; int8|float (default int8)")
    assert option_help("palettize").startswith("coreml fp32/fp16 only; 4|6|8")


def test_readme_states_the_table():
    text = (REPO / "README.md").read_text()
    section = text[text.index("### `pocus-export`"):text.index("### Runtime")]
    for t in TARGETS.values():
        row = next(line for line in section.splitlines() if line.strip().startswith(f"| {t.name} |"))
        assert t.model_file in row, t.name
    for option in OPTIONS.values():
        assert option.flag in section, option.flag
    bullet = section[section.index("- Options per target"):]
    bullet = " ".join(bullet[:bullet.index("\n- ")].split())
    for key, option in OPTIONS.items():  # each target-specific flag is followed by the targets that take it
        if option_help(key).split(";")[0].split(":")[0].endswith(" only"):
            window = bullet[bullet.index(option.flag):][:90]
            assert all(t in window for t, spec in TARGETS.items() if key in spec.options), (option.flag, window)
    assert "refuse" in bullet and "--parity-data" in bullet


@pytest.mark.parametrize("args,names", [
    (["-t", "onnx", "--nhwc", "--palettize", "4", "--io", "float", "--compute-precision", "fp32"],
     ["--nhwc", "--palettize 4", "--io float", "--compute-precision fp32", "onnx fp32"]),
    (["-t", "coreml", "-p", "int8", "--nhwc", "--calib-data", "frames"], ["--nhwc", "coreml int8"]),
    (["-t", "coreml", "-p", "int8", "--calib-data", "frames"], ["--calib-data frames", "--parity-data",
                                                                "--activations int8"]),
])
def test_cli_refuses_and_leaves_no_bundle(args, names, tmp_path, monkeypatch, capsys):
    from pocus_edge.cli import _run, app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "frames").mkdir()
    before = set(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        _run(app, ["export", "unet-resnet50", *args, "--image-size", "64", "--out", str(tmp_path / "bundle")])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "Traceback" not in err
    for name in names:
        assert name in err
    assert set(tmp_path.iterdir()) == before  # no bundle, no hidden work folder


def test_suite_passes_frames_as_the_table_says(tmp_path, monkeypatch):
    """A suite's calib_data calibrates precisions that calibrate and is the parity set of the others."""
    import pocus_edge.export
    from pocus_edge.bench.suite import _bundle

    calls = {}
    monkeypatch.setattr(pocus_edge.export, "export", lambda model, target, precision, out, **kw: calls.update(
        {(target, precision): kw}), raising=False)
    suite = {"out": str(tmp_path), "calib_data": "frames"}
    for target, precision in PAIRS:
        _bundle(suite, "enc", "encoder-resnet50", target, precision)
        kw = calls[(target, precision)]
        key = "calib_data" if TARGETS[target].calibrates(precision) else "parity_data"
        assert kw[key] == "frames" and ({"calib_data", "parity_data"} - {key}).isdisjoint(kw)
        resolve_options(target, precision, {"calib_data": kw.get("calib_data")})  # what export() will accept
