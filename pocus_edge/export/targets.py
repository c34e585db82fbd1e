"""The capability table of export targets: the one place that says what each target takes.

Per target: canonical name, aliases, model file, precisions, the options it takes (per precision, with
their allowed values and defaults), which precisions calibrate on `--calib-data`, and which runtime backend
checks parity on this machine. `export()` validates every request against it before building anything
(`resolve_options`), the CLI's help strings come from it (`option_help`), README's target table states the
same facts, and tests/test_targets_contract.py is generated from it. Imports nothing heavy: `--help` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")
FLOAT = ("fp32", "fp16")
ONOFF = (False, True)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "auto")


class _Given:
    """In Option.needs: any value given (not None); shown as DIR, the options that use it take folders."""

    def __repr__(self) -> str:
        return "DIR"


GIVEN = _Given()


def _is(value: Any, wanted: Any) -> bool:
    """`value` is `wanted` for Option.needs: GIVEN matches anything but None; else same type and equal."""
    return value is not None if wanted is GIVEN else type(value) is type(wanted) and value == wanted


@dataclass(frozen=True)
class Option:
    """A target option: CLI flag, what it does, allowed values (None: any, checked where it is read), default."""

    flag: str
    what: str
    values: tuple[Any, ...] | None = ONOFF
    default: Any = False  # one value, or {precision: value}
    precisions: tuple[str, ...] = PRECISIONS  # the precisions at which the target takes it
    required: bool = False
    needs: tuple[Any, str, Any, str] | None = None  # (this value, other option, the value it needs, why)
    words: dict[bool, str] = field(default_factory=dict)  # the CLI's spelling of on/off (--batch dynamic)
    instead: str = ""  # what to do instead, said when a target/precision refuses the option

    def default_for(self, precision: str) -> Any:
        return self.default.get(precision) if isinstance(self.default, dict) else self.default

    def shown(self, value: Any) -> str:
        """The option as a user types it: `--nhwc`, `--no-fold-upsample`, `--io float`, `--batch dynamic`."""
        if isinstance(value, bool) and value in self.words:
            return f"{self.flag} {self.words[value]}"
        if isinstance(value, bool):
            return self.flag if value else f"--no-{self.flag[2:]}"
        return f"{self.flag} {value}"

    def allows(self, value: Any) -> bool:
        """Strict membership: 1 is not True, "4" is not 4."""
        return self.values is None or any(type(value) is type(v) and value == v for v in self.values)


@dataclass(frozen=True)
class Target:
    """One export target: what it writes and everything it takes."""

    name: str
    aliases: tuple[str, ...]
    model_file: str
    options: dict[str, Option]
    parity_backend: str  # the runtime backend that checks parity on this machine
    parity_note: str = ""
    precisions: tuple[str, ...] = PRECISIONS
    raw_input_only: bool = False  # the model always takes 1-channel pixels 0..255

    def takes(self, precision: str) -> dict[str, Option]:
        """The options this target takes at `precision`."""
        return {k: o for k, o in self.options.items() if precision in o.precisions}

    def calibrates(self, precision: str, options: dict[str, Any] | None = None) -> bool:
        """Whether `precision` reads calibration frames (--calib-data); where that depends on another option (Core
        ML int8 calibrates only with --activations int8), whether the request `options` does."""
        option = self.takes(precision).get("calib_data")
        if option is None or option.required:
            return option is not None
        return options is not None and option.needs is not None and _is(options.get(option.needs[1]),
                                                                          option.needs[2])


def _calibration(methods: tuple[str, ...] | None, most: int = 300) -> dict[str, Option]:
    """int8 calibration options; `methods` None where the quantiser's method is fixed (not a choice); `most`: the
    default frame count (ONNX streams its calibration in chunks, so it takes more)."""
    options = {
        "calib_data": Option("--calib-data", "real ultrasound frames for the int8 ranges (~300)", None, None,
                             ("int8",), required=True, instead="to check parity on real frames pass them as "
                             "--parity-data DIR"),
        "num_calib": Option("--num-calib", "calibration images used at most", None, most, ("int8",)),
    }
    if methods:
        options["calibration_method"] = Option("--calib-method", "how activation ranges are chosen", methods,
                                               "minmax", ("int8",))
    return options


NO_MIXED = ("mixed precision (float layers) is built for onnx, tensorrt and tflite int8 (tflite: with --io int8, "
            "the PT2E path)")


def _mixed_precision() -> dict[str, Option]:
    """int8 accuracy options of the ONNX QDQ (quantize.py) and TFLite PT2E (tflite_mixed.py) quantisers: sensitivity
    report, float-layer fallback."""
    int8 = ("int8",)
    return {
        "mixed_precision": Option("--mixed-precision", "when full int8 misses --accuracy-target on held-out frames, "
                                  "keep the most sensitive layers in float", ONOFF, True, int8, instead=NO_MIXED),
        "accuracy_target": Option("--accuracy-target", "agreement with fp32 to reach (Dice, top-1 or cosine; "
                                  "default the int8 parity threshold)", None, None, int8, instead=NO_MIXED),
        "max_float_layers": Option("--max-float-layers", "layers mixed precision may keep in float (default 5 % of "
                                   "them, at least 1)", None, None, int8, instead=NO_MIXED),
        "float_layers": Option("--float-layers", "keep these layers in float instead of searching, comma-separated "
                               "(onnx/tensorrt: ONNX node names or their module paths; tflite: module paths of "
                               "convolutions/linears, e.g. decoder.blocks.3.conv1.0; --explain lists them)", None, None,
                               int8, instead=NO_MIXED),
        "explain": Option("--explain", "write the per-layer sensitivity report (quant_report.json/.md/.png)",
                          ONOFF, False, int8, instead=NO_MIXED),
    }


def _coreml_activations() -> dict[str, Option]:
    """Core ML int8: weights only, or W8A8 with --activations int8, whose activation ranges are calibrated on
    --calib-data (coreml.py); without it Core ML int8 refuses --calib-data."""
    calib = _calibration(None)
    int8 = ("int8",)
    why = ("Core ML int8 quantises only the weights unless its activations are quantised too; parity frames go to "
           "--parity-data DIR")
    return {
        "activations": Option("--activations", "int8: also quantise the activations (W8A8), calibrated on "
                              "--calib-data", ("float", "int8"), "float", int8,
                              needs=("int8", "calib_data", GIVEN, "activation ranges are calibrated on real frames")),
        "calib_data": Option(calib["calib_data"].flag, calib["calib_data"].what, None, None, int8,
                             needs=(GIVEN, "activations", "int8", why)),
        "num_calib": calib["num_calib"],
    }


def _fold(needs: tuple[Any, str, Any, str] | None = None) -> Option:
    """int8 keeps the trained decoder by default: with the fold, ONNX int8 mask agreement on BUSI fell from
    0.919 to 0.904 (benchmarks/export/README.md) and litert-torch's PT2E int8 path cannot convert it."""
    return Option("--fold-upsample", "rewrite the U-Net decoder's upsample + 3x3 conv into fewer multiply-adds, "
                  "same outputs", ONOFF, {"fp32": True, "fp16": True, "int8": False}, needs=needs)


BATCH = Option("--batch", "batch size of the model input, fixed or dynamic", words={False: "1", True: "dynamic"})
# every target: what the runtime measures on masks (runtime/measure.py); None = by task (area for segmentation)
MEASURE = Option("--measurements", "what the runtime measures on segmentation masks, written to the manifest "
                 "(default: area for segmentation, none otherwise)", ("none", "area", "ellipse", "area,ellipse"), None)
# every target: what the model record (export/record.py: record.json + MODEL_CARD.md) states about the model
RECORD = {"intended_use": Option("--intended-use", "the intended use written to the model record (else a placeholder "
                                 "says none was given)", None, None),
          "record": Option("--record", "a YAML file with the model record's intended_use, limitations, out_of_scope, "
                           "license, contact, data_licenses", None, None),
          "license": Option("--license", "the model's licence in the record (default: unspecified)", None, None)}
# every target: parity frames kept in the bundle for the self-test (export/reference.py checks 1..64)
REFERENCE = Option("--reference-frames", "parity frames stored in the bundle with the exported model's outputs, "
                   "for the self-test (pocus verify, load(verify=True), the Android app)", None, 4)

TARGETS: dict[str, Target] = {
    "onnx": Target(
        "onnx", ("ort",), "model.onnx", parity_backend="onnxruntime", options={
            "dynamic_batch": BATCH, "fold_upsampling": _fold(), "measurements": MEASURE,
            "reference_frames": REFERENCE,
            "ort_format": Option("--ort-format", "also write model.ort for ONNX Runtime Mobile"),
            **_calibration(CALIBRATION_METHODS, 500), **_mixed_precision(), **RECORD}),
    "tflite": Target(
        "tflite", ("litert",), "model.tflite", parity_backend="tflite", options={
            "fold_upsampling": _fold(needs=(True, "io", "float", "tflite int8 with int8 I/O (PT2E) cannot convert "
                                            "the folded decoder")),
            "nhwc": Option("--nhwc", "channels-last input/output, as mobile apps feed"), "measurements": MEASURE,
            "reference_frames": REFERENCE,
            "io": Option("--io", "tensor type of the graph input/output", ("int8", "float"), "int8", ("int8",)),
            **_calibration(None), **_mixed_precision(), **RECORD}),
    "coreml": Target(
        "coreml", ("mlpackage", "mlmodel"), "model.mlpackage", parity_backend="coreml",
        parity_note="macOS only; on Linux recorded as skipped with the reason", raw_input_only=True, options={
            "fold_upsampling": _fold(), "measurements": MEASURE, "reference_frames": REFERENCE,
            **_coreml_activations(),
            "compute_precision": Option("--compute-precision", "compute precision of the ML program", ("fp16", "fp32"),
                                        {"fp32": "fp32", "fp16": "fp16", "int8": "fp16"}),
            "palettize": Option("--palettize", "k-means palettise the weights to this many bits", (4, 6, 8), None,
                                FLOAT), **RECORD}),
    "tensorrt": Target(
        "tensorrt", ("trt",), "model.onnx", parity_backend="onnxruntime",
        parity_note="the kit's ONNX on CPU; the engine is checked on the device", options={
            "dynamic_batch": BATCH, "fold_upsampling": _fold(), "measurements": MEASURE,
            "reference_frames": REFERENCE,
            "build_engine": Option("--build-engine", "build model.engine now (needs tensorrt and an NVIDIA GPU)"),
            **_calibration(CALIBRATION_METHODS, 500), **_mixed_precision(), **RECORD}),
}
ALIASES = {alias: t.name for t in TARGETS.values() for alias in t.aliases}
OPTIONS: dict[str, Option] = {k: o for t in TARGETS.values() for k, o in t.options.items()}  # flag and meaning


def canonical_target(name: str) -> str:
    """Resolve aliases; unknown names raise ConfigError listing the valid ones (with a did-you-mean)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in TARGETS:
        return key
    choices = sorted(TARGETS) + sorted(ALIASES)
    close = difflib.get_close_matches(key, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"--target {name!r} is unknown.{hint} Valid targets: {', '.join(TARGETS)} "
        f"(aliases: {', '.join(f'{a}->{t}' for a, t in ALIASES.items())})"
    )


def target_module(name: str) -> ModuleType:
    """The module implementing a (canonical or alias) target."""
    return importlib.import_module(f"{__package__}.{canonical_target(name)}")


def check_precision(target: str, precision: str) -> str:
    """Validate the precision for the target; raises ConfigError naming the supported ones."""
    p = precision.strip().lower()
    supported = TARGETS[canonical_target(target)].precisions
    if p not in supported:
        raise ConfigError(
            f"--precision {precision!r} is not available for {target}; choose one of {', '.join(supported)}")
    return p


def resolve_options(target: str, precision: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every option `target` takes at `precision`, from `given` or the table's default; pure and fast.

    None means "not given"; False for an on/off option means "off", which every target accepts. Raises one
    ConfigError for unknown names, options the target/precision does not take, values not allowed, a missing
    required option, or a value that needs another option's value.
    """
    spec = TARGETS[canonical_target(target)]
    unknown = [k for k in given if k not in OPTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(OPTIONS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"export option(s) {', '.join(map(repr, unknown))} unknown.{hint} "
                          f"Options: {', '.join(OPTIONS)}")
    takes = spec.takes(precision)
    refused = [k for k, v in given.items() if k not in takes and v is not None and v is not False]
    if refused:
        raise ConfigError(_refusal(spec, precision, {k: given[k] for k in refused}))
    resolved = {}
    for key, option in takes.items():
        value = given.get(key)
        if value is None and option.required:
            raise ConfigError(f"{spec.name} {precision} needs {option.flag} DIR: {option.what.split(';')[0]}")
        value = option.default_for(precision) if value is None else value
        if value is not None and not option.allows(value):
            raise ConfigError(f"{option.flag} {value!r}: choose {_or(option.values or ())} for {spec.name} "
                              f"{precision}")
        resolved[key] = value
    for key, option in takes.items():
        if option.needs and _is(resolved[key], option.needs[0]) and option.needs[1] in takes and \
                not _is(resolved[option.needs[1]], option.needs[2]):
            other = takes[option.needs[1]]
            raise ConfigError(f"{option.shown(resolved[key])}: {option.needs[3]}; drop it or add "
                              f"{other.shown(option.needs[2])}")
    return resolved


def _refusal(spec: Target, precision: str, refused: dict[str, Any]) -> str:
    """One message: what was refused, where each option applies, and what this target/precision takes."""
    parts = [f"{OPTIONS[k].shown(v)} ({_where(k)})" for k, v in refused.items()]
    verb, it, belongs = ("does", "it", "it belongs") if len(parts) == 1 else ("do", "them", "they belong")
    takes = ", ".join(f"{o.flag} {_values(o)}".strip() for o in spec.takes(precision).values())
    instead = "".join(f"; {OPTIONS[k].instead}" for k in refused if OPTIONS[k].instead)
    return (f"{', '.join(parts)} {verb} not apply to {spec.name} {precision}, which takes: {takes}. "
            f"Drop {it} or choose the target and precision {belongs} to{instead}")


def _values(option: Option) -> str:
    """Allowed values as the CLI spells them ('int8|float', '1|dynamic'); '' for any value or an on/off flag."""
    if option.values is None or (option.values == ONOFF and not option.words):
        return ""
    return "|".join(option.words.get(v, str(v)) if isinstance(v, bool) else str(v) for v in option.values)


def _or(values: tuple[Any, ...]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _where(key: str) -> str:
    """Where an option applies, e.g. 'tflite int8 only', 'coreml fp32/fp16 only'; '' when everywhere."""
    groups: dict[str, list[str]] = {}  # precision label ('' = all of the target's) -> targets
    for t in TARGETS.values():
        option = t.options.get(key)
        if option is not None:
            precs = [p for p in t.precisions if p in option.precisions]
            groups.setdefault("" if precs == list(t.precisions) else "/".join(precs), []).append(t.name)
    if groups == {"": list(TARGETS)}:
        return ""
    return ", ".join(", ".join(ts) if not label else f"{'/'.join(ts)} {label}" for label, ts in groups.items()) + \
        " only"


def _default_text(option: Option) -> str:
    def word(value: Any) -> str:
        if isinstance(value, bool):
            return option.words.get(value, "on" if value else "off")
        return str(value)

    if not isinstance(option.default, dict):
        return "" if option.default in (None, False) and not option.words else f" (default {word(option.default)})"
    by_value: dict[str, list[str]] = {}
    for precision in option.precisions:
        by_value.setdefault(word(option.default_for(precision)), []).append(precision)
    return " (default " + "; ".join(f"{'/'.join(ps)}: {v}" for v, ps in by_value.items()) + ")"


def option_help(key: str) -> str:
    """The CLI help of an option, from the table: where it applies, allowed values, default, meaning."""
    option = OPTIONS[key]
    where = _where(key)
    head = "; ".join(p for p in (where, _values(option)) if p)
    what = option.what[0].upper() + option.what[1:]
    text = f"{head}{_default_text(option)}: {option.what}" if head else f"{what}{_default_text(option)}"
    for t in TARGETS.values():
        needs = t.options[key].needs if key in t.options else None
        if needs:
            other = t.options[needs[1]]
            text += f"; {t.name} {'/'.join(other.precisions)}: {option.shown(needs[0])} needs {other.shown(needs[2])}"
    return text + "."


def target_help() -> str:
    return f"{' | '.join(TARGETS)} (aliases: {', '.join(f'{a}->{t}' for a, t in ALIASES.items())})."


def precision_help() -> str:
    by_precisions: dict[tuple[str, ...], list[str]] = {}
    for t in TARGETS.values():
        by_precisions.setdefault(t.precisions, []).append(t.name)
    calibrating = [t.name for t in TARGETS.values() if t.calibrates("int8")]
    calibrating += [f"{t.name} with {t.options[o.needs[1]].shown(o.needs[2])}" for t in TARGETS.values()
                    for o in [t.takes("int8").get("calib_data")] if o is not None and not o.required and o.needs]
    return ("; ".join(f"{' | '.join(ps)}" + ("" if len(by_precisions) == 1 else f" ({', '.join(ts)})")
                      for ps, ts in by_precisions.items())
            + f". int8 calibrates on --calib-data for {', '.join(calibrating)}.")
