"""The model record of a bundle: `record.json` (machine-readable) and `MODEL_CARD.md` (generated from it).

Written at export, listed in the manifest's `files`, so the bundle digest covers both. The record holds:
- intended use, limitations and licences (`--intended-use TEXT`, `--license ID`, `--record FILE.yaml`; without
  them a visible placeholder says none was given);
- the lineage, earliest ancestor first, each step with its sha256: teacher -> distilled student -> fine-tuned
  checkpoint -> bundle, followed only through what the checkpoint cards record (a file that is gone is recorded
  with its sha256 and `file: not found`; nothing is inferred);
- the data each step trained on, the calibration and parity frames (folders, frame counts, a digest of the
  per-frame sha256 list), test metrics with their split, and the software (every installed Python package);
- `smoke_test_only`: true when any step descends from random weights (a random teacher or ViT backbone, a built-in
  smoke model, or a card that says so). The manifest, `pocus info`, the card and every prediction repeat it.
The card is rendered by `record_card.render_card(record)` and never edited by hand.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text, nan_to_null, sha256_file
from .record_card import CARD_NAME, render_card
from .record_lineage import FRAME_DIGEST_RULE, Lineage, digest_of, trace_lineage

__all__ = ["RecordOptions", "pop_record_options", "trace_lineage", "write_record", "build_record", "read_card_text"]
RECORD_NAME = "record.json"
RECORD_VERSION = 1
OPTION_KEYS = ("intended_use", "record", "license")  # the table's export options this module reads
YAML_KEYS = {"intended_use": "text", "limitations": "text or a list of texts", "out_of_scope": "text or a list of "
             "texts", "license": "text (the model's licence)", "contact": "text",
             "data_licenses": "a mapping FOLDER: licence text"}
PLACEHOLDER_USE = ("NOT GIVEN: no intended use was stated at export (pocus-export --intended-use TEXT or --record "
                   "FILE.yaml). Treat this model as unvalidated: not for clinical decisions.")
PLACEHOLDER_LIMITATIONS = "NOT GIVEN: no limitations were stated at export (--record FILE.yaml, key limitations)."
EXPORT_FRAME_RULE = "sha256 of the gray frame in [0, 1] as the runtime reads it (dtype, shape, pixels)"


@dataclass
class RecordOptions:
    """What the exporter states about the model: from `--intended-use`, `--license` and `--record FILE.yaml`."""

    intended_use: str | None = None
    limitations: list[str] = field(default_factory=list)
    out_of_scope: list[str] = field(default_factory=list)
    license: str | None = None
    contact: str | None = None
    data_licenses: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # field -> "--intended-use" | the YAML path


def pop_record_options(options: dict[str, Any]) -> RecordOptions:
    """Remove the record options from an export's resolved options and check them (before anything is built)."""
    given = {key: options.pop(key, None) for key in OPTION_KEYS}
    result = _read_yaml(Path(given["record"])) if given["record"] is not None else RecordOptions()
    for key, flag in (("intended_use", "--intended-use"), ("license", "--license")):
        if given[key] is not None:
            setattr(result, key, _text(given[key], flag))
            result.sources[key] = flag
    return result


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected non-empty text, got {value!r}; give the text or drop the option")
    return value.strip()


def _texts(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [_text(item, where) for item in items]


def _read_yaml(path: Path) -> RecordOptions:
    """--record FILE.yaml: a mapping of YAML_KEYS; unknown keys and wrong types are refused with the list."""
    import yaml

    if not path.is_file():
        what = "is not a file" if path.exists() else "no such file"
        raise ConfigError(f"--record {path}: {what}; give a YAML file with any of {', '.join(YAML_KEYS)}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--record {path}: not valid UTF-8 YAML ({str(exc).splitlines()[0]}); fix the file")
    if not isinstance(data, dict):
        raise ConfigError(f"--record {path}: expected a mapping with any of {', '.join(YAML_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in YAML_KEYS)
    if unknown:
        raise ConfigError(f"--record {path}: unknown key(s) {', '.join(unknown)}; allowed: "
                          + "; ".join(f"{k} ({v})" for k, v in YAML_KEYS.items()))
    out = RecordOptions(sources={k: str(path) for k in data})
    for key in ("intended_use", "license", "contact"):
        if key in data:
            setattr(out, key, _text(data[key], f"--record {path}: {key}"))
    for key in ("limitations", "out_of_scope"):
        if key in data:
            setattr(out, key, _texts(data[key], f"--record {path}: {key}"))
    if "data_licenses" in data:
        licences = data["data_licenses"]
        if not isinstance(licences, dict):
            raise ConfigError(f"--record {path}: data_licenses must be a mapping FOLDER: licence text")
        out.data_licenses = {str(k): _text(v, f"--record {path}: data_licenses {k}") for k, v in licences.items()}
    return out


def export_frames(workdir: Path, calibration, parity) -> dict[str, Any]:
    """Calibration and parity frames of this export (and the mixed-precision search frames calibration_frames.json
    lists): folder, count and the digest of their per-frame sha256 (quantize_calib.frame_digest, as that file)."""
    from .quantize_calib import frame_digest

    frames_file = workdir / "calibration_frames.json"
    listed = json.loads(frames_file.read_text()) if frames_file.is_file() else {}
    out: dict[str, Any] = {}
    for role, images in (("calibration", calibration), ("parity", parity)):
        out[role] = None if images is None else _frame_entry(images.origin, [frame_digest(im) for im in images.images],
                                                             frames_file.name if role in listed else None)
    search = listed.get("mixed_precision_search")
    if search:
        out["mixed_precision_search"] = _frame_entry(search["source"], [f["sha256"] for f in search["frames"]],
                                                     frames_file.name)
    return out


def _frame_entry(folder: str, hashes: list[str], frame_list: str | None) -> dict[str, Any]:
    return {"folder": folder, "frames": len(hashes), "digest": digest_of(hashes), "frame_sha256": EXPORT_FRAME_RULE,
            "digest_rule": FRAME_DIGEST_RULE, **({"frame_list": frame_list} if frame_list else {})}


def software() -> dict[str, Any]:
    """pocus-edge version, git commit of its checkout (or None), Python, and every installed package's version."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in {k.lower() for k in packages}:
            packages[name] = dist.version
    return {"pocus-edge": __version__, "git": _git(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))}


def _git() -> dict[str, Any] | None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
                                "pocus_edge"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "uncommitted_changes": bool(dirty.stdout.strip())
            if dirty.returncode == 0 else None}


def data_licence(folder: str, given: dict[str, str]) -> str:
    """A data folder's licence: --record's data_licenses, else a `License: X` line of its README, else a pointer."""
    for key in (folder, Path(folder).name):
        if key in given:
            return given[key]
    readme = Path(folder) / "README.md"
    try:
        lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"unspecified ({folder} has no README.md)"
    for line in lines:
        match = re.match(r"^[#>*_\-\s]*licen[cs]e[*_\s]*[:\u2013\u2014-][*_\s]*(\S.*?)[*_\s]*$", line, re.IGNORECASE)
        if match:
            return match.group(1)
    return f"see {readme}"


def _licences(options: RecordOptions, lineage: Lineage, frames: dict[str, Any]) -> dict[str, Any]:
    folders = [f for entry in lineage.training for f in entry.get("folders", [])]
    folders += [re.sub(r"( \([^()]*\))+$", "", v["folder"]) for v in frames.values() if v]  # "DIR (held out ...)"
    real = list(dict.fromkeys(f for f in folders if Path(f).is_dir()))
    return {"model": options.license or "unspecified", "model_source": options.sources.get("license"),
            "data": [{"folder": f, "license": data_licence(f, options.data_licenses)} for f in real]}


def build_record(manifest: dict[str, Any], options: RecordOptions, lineage: Lineage, frames: dict[str, Any],
                 parity: dict[str, Any]) -> dict[str, Any]:
    """The record of a bundle (pure apart from reading README licences and installed package metadata)."""
    smoke = lineage.smoke_test_only
    limitations = list(options.limitations) or [PLACEHOLDER_LIMITATIONS]
    if smoke:
        limitations.insert(0, "SMOKE TEST ONLY: it descends from random weights; its outputs carry no meaning")
    bundle_step = {"step": "bundle", "name": manifest["name"], "target": manifest["target"],
                   "precision": manifest["precision"], "model_file": manifest["model_file"],
                   "sha256": manifest["files"][manifest["model_file"]], "smoke_test_only": smoke,
                   "note": "the bundle digest (bundle.sha256, shown by pocus info) covers this record"}
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION, "created_at": manifest["created_at"],
        "model": {"name": manifest["name"], "task": manifest["task"],
                  "architecture": manifest["source"]["architecture"], "labels": manifest["labels"],
                  "target": manifest["target"], "precision": manifest["precision"],
                  "input_size": manifest["preprocessing"]["image_size"], "source": manifest["source"]},
        "smoke_test_only": smoke, "smoke_test_reasons": lineage.smoke_reasons,
        "intended_use": {"text": options.intended_use or PLACEHOLDER_USE, "given": options.intended_use is not None,
                         "source": options.sources.get("intended_use")},
        "limitations": limitations, "out_of_scope": list(options.out_of_scope), "contact": options.contact,
        "lineage": [*lineage.steps, bundle_step],
        "data": {"training": lineage.training, **frames},
        "metrics": lineage.metrics,
        "export_parity": {k: parity[k] for k in ("status", "reason", "backend", "metrics", "data") if k in parity},
        "license": _licences(options, lineage, frames),
        "software": software(),
    }
    return nan_to_null(record)  # type: ignore[return-value]  # a dict stays a dict


def write_record(workdir: Path, manifest: dict[str, Any], options: RecordOptions, lineage: Lineage, calibration,
                 parity_images, parity: dict[str, Any]) -> dict[str, str]:
    """Write record.json and MODEL_CARD.md (rendered from it) into the work folder; {file name: sha256}."""
    record = build_record(manifest, options, lineage, export_frames(workdir, calibration, parity_images), parity)
    atomic_write_json(workdir / RECORD_NAME, record)
    atomic_write_text(workdir / CARD_NAME, render_card(record))
    return {name: sha256_file(workdir / name) for name in (RECORD_NAME, CARD_NAME)}


def read_card_text(bundle_dir: Path) -> str:
    """MODEL_CARD.md of a (verified) bundle; a bundle exported before records existed is named as such."""
    from ..runtime.manifest import BundleError

    path = Path(bundle_dir) / CARD_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: holds no {CARD_NAME} (exported before model records existed); re-export it")
    return path.read_text(encoding="utf-8")


if __name__ == "__main__":  # python -m pocus_edge.export.record BUNDLE: re-render the card from record.json
    print(render_card(json.loads((Path(sys.argv[1]) / RECORD_NAME).read_text())), end="")
