"""Assemble, validate and atomically publish a bundle folder.

A bundle is built in a hidden sibling work folder; only after the manifest validates and parity
passes is it renamed into place, so a failed or interrupted export never leaves a folder that looks valid.
The last file written is bundle.sha256, one digest over every file (runtime/integrity.py), plus bundle.sig
when the export is signed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_json
from ..runtime.integrity import seal
from ..runtime.manifest import MANIFEST_NAME, file_digest, validate_manifest
from .base import ExportError


def make_workdir(out: Path, overwrite: bool) -> Path:
    """Check the destination and create the hidden work folder beside it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out}: folder exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def hash_files(workdir: Path, names: list[str]) -> dict[str, str]:
    """{file name: sha256} (directories such as .mlpackage hashed over their contents)."""
    return {name: file_digest(workdir / name) for name in names}


def write_manifest(workdir: Path, manifest: dict[str, Any]) -> None:
    """Validate against the schema, write manifest.json atomically, and re-seal the folder (bundle.sha256) so
    the work folder is a loadable bundle at every step (parity loads it through the runtime)."""
    validate_manifest(manifest, "export manifest")
    _check_strict_json(manifest, "export manifest")
    atomic_write_json(workdir / MANIFEST_NAME, manifest)
    seal(workdir)


def _check_strict_json(obj: Any, where: str) -> None:
    """Refuse NaN/Infinity: Python would write them as bare tokens no JSON parser (or the Android core) accepts."""
    try:
        json.dumps(obj, allow_nan=False)
    except ValueError:
        raise ExportError(f"{where}: holds a NaN or infinite number; refusing to write invalid JSON")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def publish(workdir: Path, out: Path, sign_key: str | Path | None = None) -> Path:
    """Seal the finished work folder (bundle.sha256 written last, bundle.sig when `sign_key` is given) and rename
    it onto `out`, replacing an old bundle only at the last moment."""
    out = Path(out)
    seal(workdir, sign_key)
    _make_readable(workdir)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "bundle")
    os.replace(workdir, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def discard(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Temp files are created private (0600); a published bundle gets ordinary permissions (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
