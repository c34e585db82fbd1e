"""Read, validate and verify a bundle's manifest.json (schema_version 1).

The JSON Schema lives beside this module (manifest.schema.json) and is the single definition the
Python runtime, the exporter and the Android core share. `verify_bundle` also checks the bundle digest
(bundle.sha256, integrity.py) over every file, manifest included, and the sha256 of every file the manifest
lists, so a tampered, truncated, incomplete or extended bundle is refused at load.
"""

from __future__ import annotations

import hashlib
import json
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
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})")
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
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
    from .integrity import TENSORRT_LOCAL_OUTPUTS, check_digest, check_signature, file_hashes, scan_files

    bundle_dir = Path(bundle_dir)
    marker = bundle_dir / MANIFEST_NAME
    if marker.is_symlink() or marker.is_file():  # a bundle (not e.g. a home folder): refuse links before reading
        scan_files(bundle_dir)
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
    return manifest, check_signature(bundle_dir, digest, trusted_keys)


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
