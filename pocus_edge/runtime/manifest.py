"""Read, validate and verify a bundle's manifest.json (schema_version 1).

The JSON Schema lives beside this module (manifest.schema.json) and is the single definition the
Python runtime, the exporter and the Android core share. `verify_bundle` also checks the bundle digest
(bundle.sha256, integrity.py) over every file, manifest included, and the sha256 of every file the manifest
lists, so a tampered, truncated, incomplete or extended bundle is refused at load.

A bundle is hashed once per process: a successful verification is remembered as a `VerifiedBundle` together with
every file's stat fingerprint (size, mtime_ns, ctime_ns, inode); a later call re-hashes only when a file was added,
removed or touched (ctime moves on any write and cannot be set back without root), or when the files were modified
so recently that a change in the same clock tick could hide (the "racy" window, as git does).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PocusError
from ..io import sha256_file

if TYPE_CHECKING:
    from .integrity import Seal

MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


class BundleError(PocusError):
    """A bundle is missing, incomplete, tampered with, or does not match its manifest."""


RACY_NS = 2_000_000_000  # files changed this recently are re-hashed next time (timestamp granularity)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose manifest, digest and listed sha256s were checked, with what the check computed."""

    path: Path
    manifest: dict[str, Any]
    hashes: dict[str, str]  # {relative path: sha256} of every file, as verified
    digest: str  # the bundle digest (bundle.sha256)
    stamp: tuple  # the files' stat fingerprint when they were hashed


_VERIFIED: dict[Path, VerifiedBundle] = {}


def forget_verified() -> None:
    """Drop every remembered verification (the next check hashes again)."""
    _VERIFIED.clear()


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The manifest JSON Schema as a dict."""
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest(manifest: dict[str, Any], where: str = "manifest") -> None:
    """Raise BundleError naming the first schema violation (field path and reason)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        field = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BundleError(f"{where}: field {field}: {first.message}{more}")


def read_json_object(path: Path, error: type[PocusError], kind: str) -> dict[str, Any]:
    """A JSON file that must hold one object (a manifest, a checkpoint card); `error` (naming the file) otherwise."""
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc}); re-create {kind}")
    if not isinstance(value, dict):
        raise error(f"{path}: not {kind} (expected a JSON object)")
    return value


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Load and schema-validate BUNDLE/manifest.json without checking file hashes."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.exists():
        raise BundleError(f"{bundle_dir}: no such bundle folder")
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: a bundle is a folder with manifest.json; this is a file")
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST_NAME}; this is not a pocus-edge bundle (re-run pocus-export)")
    manifest = read_json_object(path, BundleError, "a bundle manifest")
    version = manifest.get("schema_version")
    if version != 1:
        raise BundleError(f"{path}: schema_version {version!r} is not supported by this runtime (expected 1)")
    validate_manifest(manifest, str(path))
    return manifest


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (sorted relative paths and contents), e.g. an .mlpackage."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(child.relative_to(path).as_posix().encode() + b"\0")
        h.update(sha256_file(child).encode())
    return h.hexdigest()


def verify_bundle(bundle_dir: Path, trusted_keys: list[str | Path] | None = None) -> dict[str, Any]:
    """Validate the manifest, the bundle digest over every file and the listed sha256s; returns the manifest.

    With `trusted_keys` (Ed25519 public key PEM files) the bundle must also carry a signature by one of them.
    """
    return inspect_bundle(bundle_dir, trusted_keys)[0]


def inspect_bundle(bundle_dir: Path, trusted_keys: list[str | Path] | None = None) -> tuple[dict[str, Any], Seal]:
    """`verify_bundle`, also returning the bundle's Seal (digest, signing key) for `pocus info`."""
    from .integrity import check_signature

    verified = verified_bundle(bundle_dir)
    return copy.deepcopy(verified.manifest), check_signature(Path(bundle_dir), verified.digest, trusted_keys)


def verified_bundle(bundle_dir: Path) -> VerifiedBundle:
    """The bundle, verified (schema, digest, listed sha256s); hashed again only when its files changed since the
    last verification in this process. Callers must not mutate the returned manifest (inspect_bundle copies it)."""
    from .integrity import scan_files

    bundle_dir = Path(bundle_dir)
    marker = bundle_dir / MANIFEST_NAME
    if marker.is_symlink() or marker.is_file():  # a bundle (not e.g. a home folder): refuse links before reading
        before = _stamp(bundle_dir, scan_files(bundle_dir))
        known = _VERIFIED.get(bundle_dir.resolve())
        if known is not None and known.stamp == before:
            return known
    else:
        before = None
    verified = _verify(bundle_dir, before)
    key = bundle_dir.resolve()
    newest = max((t for entry in verified.stamp for t in entry[2:4]), default=0)
    if verified.stamp and newest < time.time_ns() - RACY_NS:  # not racy: safe to remember
        _VERIFIED[key] = verified
    else:
        _VERIFIED.pop(key, None)
    return verified


def _stamp(bundle_dir: Path, names: list[str]) -> tuple:
    """(name, size, mtime_ns, ctime_ns, inode, device) of the bundle's files and seal files, in listing order."""
    rows = []
    for name in [*names, *sorted(n for n in os.listdir(bundle_dir) if n not in names)]:
        st = os.lstat(bundle_dir / name)
        rows.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return tuple(rows)


def _verify(bundle_dir: Path, stamp: tuple | None) -> VerifiedBundle:
    """Hash and check every file (the work behind verified_bundle)."""
    from .integrity import TENSORRT_LOCAL_OUTPUTS, check_digest, file_hashes

    manifest = read_manifest(bundle_dir)
    hashes = file_hashes(bundle_dir)
    local = TENSORRT_LOCAL_OUTPUTS if manifest["target"] == "tensorrt" else ()
    digest = check_digest(bundle_dir, hashes, local)
    if manifest["model_file"] not in manifest["files"]:
        raise BundleError(f"{bundle_dir}: manifest lists no sha256 for its model file {manifest['model_file']}")
    for name, expected in manifest["files"].items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{bundle_dir}: manifest file entry {name!r} points outside the bundle")
        actual = _listed_digest(hashes, Path(name).as_posix())
        if actual is None:
            raise BundleError(f"{bundle_dir}: {name} is missing; the bundle is incomplete (re-export it)")
        if actual != expected:
            raise BundleError(
                f"{bundle_dir}: {name} sha256 {actual[:12]}… does not match the manifest ({expected[:12]}…); "
                "the file was changed or corrupted after export"
            )
    return VerifiedBundle(bundle_dir, manifest, hashes, digest, stamp or ())


def _listed_digest(hashes: dict[str, str], name: str) -> str | None:
    """`file_digest` of NAME computed from already-verified hashes (a folder: over its files, as file_digest)."""
    if name in hashes:
        return hashes[name]
    children = sorted(Path(rel).relative_to(name) for rel in hashes if rel.startswith(name + "/"))
    if not children:
        return None
    h = hashlib.sha256()
    for child in children:
        h.update(child.as_posix().encode() + b"\0")
        h.update(hashes[f"{name}/{child.as_posix()}"].encode())
    return h.hexdigest()
