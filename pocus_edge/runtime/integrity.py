"""One digest over a whole bundle (`bundle.sha256`) and an optional Ed25519 signature over it (`bundle.sig`).

`bundle.sha256` is a canonical listing of every regular file in the bundle except the two seal files:
one line `<sha256 hex>  <relative posix path>\\n` per file, sorted by path (UTF-8 byte order), the same
format `sha256sum` prints. The bundle's digest is the sha256 of that listing's bytes. It covers
manifest.json and parity.json, so an edited mean/std, threshold or label is refused like a changed model.
A bundle holding a symlink or any other non-regular file is refused before anything is read or hashed.

`bundle.sig` (JSON) holds an Ed25519 signature over the ASCII bytes `pocus-edge-bundle-v1 sha256:<digest>`.
The `cryptography` package (extra `sign`) is imported only when a bundle is signed or a signature checked;
the rest of this module needs only the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_text, sha256_file
from .manifest import BundleError

DIGEST_NAME = "bundle.sha256"
SIGNATURE_NAME = "bundle.sig"
SEAL_FILES = (DIGEST_NAME, SIGNATURE_NAME)
TENSORRT_LOCAL_OUTPUTS = ("model.engine", "timing.cache")
SIGNED_PREFIX = "pocus-edge-bundle-v1 sha256:"
_LINE = re.compile(r"([0-9a-f]{64})  (.+)")
_SIGN_EXTRA = "pip install 'pocus-edge[sign]'"


class IntegrityError(BundleError):
    """A bundle's files do not match its digest, or its signature is missing, wrong or untrusted."""


@dataclass(frozen=True)
class Seal:
    """What a verified bundle's seal says: its digest and, when signed, the signing key's fingerprint."""

    digest: str
    signed_by: str | None = None  # fingerprint of the key in bundle.sig (checked only when `trusted` is True)
    trusted: bool = False  # True when the signature verified against one of the trusted keys

    def describe(self) -> str:
        """One line for `pocus info`."""
        if self.signed_by is None:
            return "none (unsigned)"
        if self.trusted:
            return f"ed25519, verified with trusted key {self.signed_by[:16]}"
        return f"ed25519 by key {self.signed_by[:16]} (not checked: pass --trusted-key PUB.pem)"

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "signed_by": self.signed_by, "signature_verified": self.trusted}


def read_seal(bundle_dir: Path) -> Seal:
    """The seal of a bundle this process just wrote or verified, read without re-hashing its files."""
    text = (Path(bundle_dir) / DIGEST_NAME).read_bytes().decode("utf-8", "surrogateescape")
    record = _read_signature(Path(bundle_dir))
    return Seal(listing_digest(text), record["key_sha256"] if record else None)


def scan_files(bundle_dir: Path) -> list[str]:
    """Relative posix paths of the bundle's regular files (seal files excluded), refusing links and specials."""
    bundle_dir = Path(bundle_dir)
    found = []
    for root, dirs, files in os.walk(bundle_dir, onerror=_unreadable, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            rel = path.relative_to(bundle_dir).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise IntegrityError(f"{bundle_dir}: {rel} is a symbolic link; a bundle holds only plain files "
                                     "(links can point anywhere, e.g. /etc); remove it or re-export the bundle")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise IntegrityError(f"{bundle_dir}: {rel} is not a plain file or folder; remove it or re-export")
            if "\n" in rel or "\r" in rel:
                raise IntegrityError(f"{bundle_dir}: file name {rel!r} holds a line break; rename or remove it")
            if stat.S_ISREG(mode) and not (root == str(bundle_dir) and name in SEAL_FILES):
                found.append(rel)
    return sorted(found, key=lambda r: r.encode("utf-8", "surrogateescape"))


def _unreadable(exc: OSError) -> None:
    raise IntegrityError(f"{exc.filename}: cannot read this part of the bundle ({exc.strerror})")


def file_hashes(bundle_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of every file `scan_files` accepts, in listing order."""
    return {rel: sha256_file(Path(bundle_dir) / rel) for rel in scan_files(bundle_dir)}


def render_listing(hashes: dict[str, str]) -> str:
    """The canonical `bundle.sha256` text for these hashes."""
    ordered = sorted(hashes, key=lambda r: r.encode("utf-8", "surrogateescape"))
    return "".join(f"{hashes[rel]}  {rel}\n" for rel in ordered)


def listing_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def seal(bundle_dir: Path, sign_key: str | Path | None = None) -> str:
    """Write bundle.sha256 over every file now in the folder (and bundle.sig when a key is given); the digest."""
    bundle_dir = Path(bundle_dir)
    private = load_private_key(sign_key) if sign_key is not None else None
    text = render_listing(file_hashes(bundle_dir))
    atomic_write_text(bundle_dir / DIGEST_NAME, text)
    digest = listing_digest(text)
    (bundle_dir / SIGNATURE_NAME).unlink(missing_ok=True)
    if private is not None:
        signature = private.sign((SIGNED_PREFIX + digest).encode("ascii"))
        record = {"algorithm": "ed25519", "digest": digest, "key_sha256": fingerprint(private.public_key()),
                  "signature": base64.b64encode(signature).decode("ascii")}
        atomic_write_text(bundle_dir / SIGNATURE_NAME, json.dumps(record, indent=2) + "\n")
    return digest


def check_digest(bundle_dir: Path, hashes: dict[str, str], local_outputs: tuple[str, ...] = ()) -> str:
    """Compare the files' hashes with bundle.sha256; return the digest or raise naming what differs.

    `local_outputs`: top-level names a device may add after export and that the runtime ignores unless the
    manifest lists them (a TensorRT kit's model.engine and timing.cache, built in place by build_engine.sh).
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / DIGEST_NAME
    if not path.is_file():
        raise IntegrityError(
            f"{bundle_dir}: no {DIGEST_NAME}; this bundle was made before bundles carried one digest over all "
            "their files (or the digest was deleted), so an edited manifest could not be detected. Re-export it "
            "with pocus-export")
    stored = _parse_listing(path)
    missing = [rel for rel in stored if rel not in hashes]
    if missing:
        raise IntegrityError(f"{bundle_dir}: {missing[0]} is missing; the bundle is incomplete (re-export it)")
    stray = [rel for rel in hashes if rel not in stored and rel not in local_outputs]
    if stray:
        raise IntegrityError(f"{bundle_dir}: {stray[0]} is not part of the bundle ({DIGEST_NAME} does not list "
                             "it); remove it, or re-export the bundle")
    for rel, expected in stored.items():
        if hashes[rel] != expected:
            what = "the manifest was edited" if rel == "manifest.json" else "the file was changed or corrupted"
            raise IntegrityError(f"{bundle_dir}: {rel} sha256 {hashes[rel][:12]}… does not match {DIGEST_NAME} "
                                 f"({expected[:12]}…); {what} after export. Re-export the bundle")
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    if text != render_listing(stored):
        raise IntegrityError(f"{path}: not in canonical form (sorted '<sha256>  <path>' lines); re-export the bundle")
    return listing_digest(text)


def _parse_listing(path: Path) -> dict[str, str]:
    stored: dict[str, str] = {}
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    for number, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        match = _LINE.fullmatch(line)
        if match is None or match.group(2) in stored:
            raise IntegrityError(f"{path}: line {number} is not '<sha256>  <path>' (or repeats a path); the digest "
                                 "file is damaged: re-export the bundle")
        stored[match.group(2)] = match.group(1)
    return stored


def check_signature(bundle_dir: Path, digest: str, trusted_keys: list[str | Path] | None) -> Seal:
    """Read bundle.sig; with trusted keys, require it to verify against one of them (else IntegrityError)."""
    bundle_dir = Path(bundle_dir)
    record = _read_signature(bundle_dir)
    if trusted_keys is None:
        return Seal(digest, record["key_sha256"] if record else None)
    if len(trusted_keys) == 0:
        raise ConfigError("trusted keys: the list is empty; give at least one public key file, or none at all to "
                          "skip the signature check")
    keys = {fingerprint(k): k for k in (load_public_key(p) for p in trusted_keys)}
    if record is None:
        raise IntegrityError(f"{bundle_dir}: the bundle is not signed ({SIGNATURE_NAME} is missing) but trusted "
                             "keys were given; ask its publisher for a bundle exported with pocus-export --sign KEY")
    if record["digest"] != digest:
        raise IntegrityError(f"{bundle_dir}: {SIGNATURE_NAME} was made for another digest "
                             f"({record['digest'][:12]}…, the bundle's is {digest[:12]}…); the bundle changed after "
                             "it was signed")
    key = keys.get(record["key_sha256"])
    if key is None:
        raise IntegrityError(f"{bundle_dir}: signed by key {record['key_sha256'][:16]}, which is not among the "
                             f"trusted keys ({', '.join(f[:16] for f in keys)})")
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(record["signature"], (SIGNED_PREFIX + digest).encode("ascii"))
    except InvalidSignature:
        raise IntegrityError(f"{bundle_dir}: {SIGNATURE_NAME} does not verify with trusted key "
                             f"{record['key_sha256'][:16]}; the bundle or its signature was altered")
    return Seal(digest, record["key_sha256"], trusted=True)


def _read_signature(bundle_dir: Path) -> dict[str, Any] | None:
    path = bundle_dir / SIGNATURE_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("algorithm") != "ed25519":
            raise ValueError(f"algorithm {record.get('algorithm')!r} (expected ed25519)")
        signature = base64.b64decode(record["signature"], validate=True)
        if len(signature) != 64 or not re.fullmatch(r"[0-9a-f]{64}", record["digest"]) or \
                not re.fullmatch(r"[0-9a-f]{64}", record["key_sha256"]):
            raise ValueError("wrong field lengths")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: not a pocus-edge signature ({exc}); re-sign or re-export the bundle")
    return {**record, "signature": signature}


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError(f"signing and signature checks need the cryptography package: {_SIGN_EXTRA}")
    return serialization, ed25519


def fingerprint(public_key: Any) -> str:
    """sha256 hex of the raw 32-byte Ed25519 public key (what bundle.sig and `pocus info` show)."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from an unencrypted PEM file, or ConfigError saying what the file is instead."""
    return _load_key(path, private=True)


def load_public_key(path: str | Path) -> Any:
    """An Ed25519 public key from a PEM file, or ConfigError saying what the file is instead."""
    return _load_key(path, private=False)


def _load_key(path: str | Path, private: bool) -> Any:
    serialization, ed25519 = _crypto()
    flag, kind, wrong = ("--sign", "private", "PUBLIC") if private else ("--trusted-key", "public", "PRIVATE")
    if not Path(path).is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    data = Path(path).read_bytes()
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{flag} {path}: not a PEM key file (make a key pair with: pocus keygen --out DIR)")
    if f"{wrong} KEY".encode() in data:
        raise ConfigError(f"{flag} {path}: this is a {wrong.lower()} key; give the {kind} key (pocus keygen writes "
                          "NAME.pem, private, and NAME.pub.pem, public)")
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except TypeError:
        raise ConfigError(f"{flag} {path}: the key is password-protected; pocus-export takes unencrypted keys only")
    except ValueError as exc:
        raise ConfigError(f"{flag} {path}: cannot read the {kind} key ({exc})")
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise ConfigError(f"{flag} {path}: a {type(key).__name__} key; bundles are signed with Ed25519 only "
                          "(make a key pair with: pocus keygen --out DIR)")
    return key


def generate_keypair(out_dir: Path, name: str = "pocus-signing-key") -> tuple[Path, Path, str]:
    """Write OUT/NAME.pem (private, mode 0600) and OUT/NAME.pub.pem; return both paths and the fingerprint."""
    serialization, ed25519 = _crypto()
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / f"{name}.pem", out_dir / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"--out {out_dir}: {path.name} already exists; keys are never overwritten, pick "
                              "another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is a file; give a folder path")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    os.chmod(private_path, 0o600)  # the umask may only narrow; make the mode exact
    public_path.write_bytes(public_pem)
    return private_path, public_path, fingerprint(key.public_key())
