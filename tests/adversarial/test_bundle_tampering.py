"""Adversarial bundles: each case is one edit an attacker or an accident makes, and the exact refusal expected.

The bundle is the tiny classifier of tests/test_bundle_integrity.py, exported once and signed with key A.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_bundle_integrity import tiny_export

from pocus_edge.errors import ConfigError
from pocus_edge.export.base import ExportError
from pocus_edge.export.parity import compare, thresholds_for
from pocus_edge.runtime import BundleError, load
from pocus_edge.runtime.integrity import DIGEST_NAME, SIGNATURE_NAME, generate_keypair, load_private_key, seal
from pocus_edge.runtime.manifest import inspect_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = tmp_path_factory.mktemp("keys")
    private, public, _ = generate_keypair(root / "a")
    other_private, other_public, _ = generate_keypair(root / "b")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "rsa.pem").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (root / "rsa.pub.pem").write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (root / "junk.pem").write_text("hello\n")
    return {"A": private, "A.pub": public, "B": other_private, "B.pub": other_public, "rsa": root / "rsa.pem",
            "rsa.pub": root / "rsa.pub.pem", "junk": root / "junk.pem"}


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory, keys) -> Path:
    mp = pytest.MonkeyPatch()
    try:
        out = tmp_path_factory.mktemp("signed") / "bundle"
        tiny_export(out, mp, sign_key=keys["A"])
    finally:
        mp.undo()
    return out


def edit_manifest(change):
    def mutate(bundle: Path, keys) -> None:
        manifest = json.loads((bundle / "manifest.json").read_text())
        change(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return mutate


def _set(path: str, value):
    def change(manifest):
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return change


def _swap_model(bundle: Path, keys) -> None:
    """A different model file, with the manifest's own sha256 entry updated to match (all but the digest)."""
    from pocus_edge.runtime.manifest import file_digest

    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-1] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = file_digest(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _reseal_after_edit(bundle: Path, keys) -> None:
    """The unsophisticated attacker's full job: edit the label and recompute bundle.sha256 (keeps the old sig)."""
    sig = (bundle / SIGNATURE_NAME).read_bytes()
    edit_manifest(_set("labels.1", "benign"))(bundle, keys)
    seal(bundle)
    (bundle / SIGNATURE_NAME).write_bytes(sig)


def _resign_with(key: str):
    def mutate(bundle: Path, keys) -> None:
        edit_manifest(_set("labels.1", "benign"))(bundle, keys)
        seal(bundle, keys[key])
    return mutate


def _forge_signature(bundle: Path, keys) -> None:
    record = json.loads((bundle / SIGNATURE_NAME).read_text())
    record["signature"] = "A" * 86 + "=="  # 64 zero-ish bytes in base64, key fingerprint kept
    (bundle / SIGNATURE_NAME).write_text(json.dumps(record))


def _write(rel: str, content: str = "x"):
    def mutate(bundle: Path, keys) -> None:
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_text(content)
    return mutate


def _symlink(rel: str, target: str):
    def mutate(bundle: Path, keys) -> None:
        if (bundle / rel).exists():
            shutil.copy(bundle / rel, bundle.parent / f"outside-{rel}")
            (bundle / rel).unlink()
            target_path = bundle.parent / f"outside-{rel}"
        else:
            target_path = Path(target)
        os.symlink(target_path, bundle / rel)
    return mutate


def _rewrite_listing(transform):
    def mutate(bundle: Path, keys) -> None:
        path = bundle / DIGEST_NAME
        path.write_text(transform(path.read_text()))
    return mutate


def _delete(rel: str):
    return lambda bundle, keys: (bundle / rel).unlink()


EDITED = r"manifest.json sha256 \w+… does not match bundle.sha256 .*; the manifest was edited after export"
# (case id, mutation, trusted keys, exception type, message regex)
CASES = [
    ("mean", edit_manifest(_set("preprocessing.mean", [0.0, 0.0, 0.0])), None, BundleError, EDITED),
    ("std", edit_manifest(_set("preprocessing.std", [1.0, 1.0, 1.0])), None, BundleError, EDITED),
    ("threshold", edit_manifest(_set("postprocessing.threshold", 0.9)), None, BundleError, EDITED),
    ("label-to-malignant", edit_manifest(_set("labels.0", "malignant")), None, BundleError, EDITED),
    ("swap-model-and-manifest-entry", _swap_model, None, BundleError, EDITED),
    ("flip-model-byte", lambda b, k: (b / "model.onnx").write_bytes(b"\0" + (b / "model.onnx").read_bytes()[1:]),
     None, BundleError, r"model.onnx sha256 \w+… does not match bundle.sha256 .*changed or corrupted"),
    ("delete-digest", _delete(DIGEST_NAME), None, BundleError, r"no bundle.sha256; .*Re-export it with pocus-export"),
    ("delete-parity", _delete("parity.json"), None, BundleError, r"parity.json is missing; the bundle is incomplete"),
    ("stray-file", _write("notes.txt"), None, BundleError, r"notes.txt is not part of the bundle"),
    ("stray-nested-file", _write("extra/labels.json", "[]"), None, BundleError,
     r"extra/labels.json is not part of the bundle"),
    ("unlisted-engine-in-onnx-bundle", _write("model.engine"), None, BundleError,
     r"model.engine is not part of the bundle"),
    ("symlink-to-etc", _symlink("etc", "/etc"), None, BundleError, r"etc is a symbolic link"),
    ("manifest-is-symlink", _symlink("manifest.json", ""), None, BundleError, r"manifest.json is a symbolic link"),
    ("model-is-symlink", _symlink("model.onnx", ""), None, BundleError, r"model.onnx is a symbolic link"),
    ("fifo", lambda b, k: os.mkfifo(b / "pipe"), None, BundleError, r"pipe is not a plain file or folder"),
    ("listing-bad-line", _rewrite_listing(lambda t: t.upper()), None, BundleError,
     r"bundle.sha256: line 1 is not '<sha256>  <path>'"),
    ("listing-reordered", _rewrite_listing(lambda t: "".join(reversed(t.splitlines(True)))), None, BundleError,
     r"bundle.sha256: not in canonical form"),
    ("listing-duplicate", _rewrite_listing(lambda t: t + t.splitlines(True)[0]), None, BundleError,
     r"line [0-9]+ is not .*repeats a path"),
    ("resealed-edit-old-signature", _reseal_after_edit, ["A.pub"], BundleError,
     r"bundle.sig was made for another digest .*changed after it was signed"),
    ("resealed-and-signed-by-other-key", _resign_with("B"), ["A.pub"], BundleError,
     r"signed by key \w{16}, which is not among the trusted keys"),
    ("forged-signature", _forge_signature, ["A.pub"], BundleError, r"bundle.sig does not verify with trusted key"),
    ("garbage-signature", _write(SIGNATURE_NAME, "{not json"), ["A.pub"], BundleError,
     r"bundle.sig: not a pocus-edge signature"),
    ("unsigned-with-trusted-keys", lambda b, k: seal(b), ["A.pub"], BundleError,
     r"the bundle is not signed \(bundle.sig is missing\) but trusted keys were given"),
    ("trusted-key-is-rsa", None, ["rsa.pub"], ConfigError, r"--trusted-key .*rsa.pub.pem: a \w*RSA\w* key; .*Ed25519"),
    ("trusted-key-is-private", None, ["A"], ConfigError, r"--trusted-key .*: this is a private key"),
    ("trusted-key-not-pem", None, ["junk"], ConfigError, r"--trusted-key .*junk.pem: not a PEM key file"),
    ("trusted-key-missing", None, ["nope"], ConfigError, r"--trusted-key nope: no such file"),
]


@pytest.mark.parametrize("name,mutate,trusted,error,message", CASES, ids=[c[0] for c in CASES])
def test_tampered_bundle_is_refused_at_load(signed_bundle, keys, tmp_path, name, mutate, trusted, error, message):
    bundle = tmp_path / "bundle"
    shutil.copytree(signed_bundle, bundle)
    if mutate is not None:
        mutate(bundle, keys)
    trusted_keys = [keys.get(k, k) for k in trusted] if trusted else None
    with pytest.raises(error, match=message):
        load(bundle, trusted_keys=trusted_keys)


def test_untampered_copy_loads_and_verifies(signed_bundle, keys, tmp_path):
    """The control for every case above: the same copy, unedited, loads with and without the trusted key."""
    bundle = tmp_path / "bundle"
    shutil.copytree(signed_bundle, bundle)
    assert load(bundle, trusted_keys=[keys["A.pub"]]).labels == ["benign", "malignant", "normal"]
    assert load(bundle).digest


def test_symlink_is_refused_before_anything_is_hashed(signed_bundle, keys, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(signed_bundle, bundle)
    os.symlink("/etc", bundle / "etc")
    hashed: list[Path] = []
    monkeypatch.setattr("pocus_edge.runtime.integrity.sha256_file", lambda p: hashed.append(p) or "0" * 64)
    with pytest.raises(BundleError, match="etc is a symbolic link"):
        inspect_bundle(bundle)
    assert hashed == []


@pytest.mark.parametrize("key,message", [
    ("rsa", r"--sign .*rsa.pem: a \w*RSA\w* key; bundles are signed with Ed25519 only"),
    ("A.pub", r"--sign .*: this is a public key"),
    ("junk", r"--sign .*junk.pem: not a PEM key file"),
])
def test_wrong_signing_key_is_refused(keys, key, message):
    with pytest.raises(ConfigError, match=message):
        load_private_key(keys[key])


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("where,value,message", [
    ("reference", NAN, "the PyTorch fp32 reference gave 1 non-finite"),
    ("exported", NAN, "the exported model gave 1 non-finite"),
    ("exported", INF, "the exported model gave 1 non-finite"),
    ("exported", -INF, "the exported model gave 1 non-finite"),
])
def test_non_finite_parity_outputs_fail_export(where, value, message):
    ref, out = np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 1, 4, 4), np.float32)
    (ref if where == "reference" else out)[1, 0, 2, 2] = value
    with pytest.raises(ExportError, match=f"^export parity: {message}"):
        compare("segmentation", ref, out, 0.5)


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_non_finite_parity_threshold_is_refused(value):
    with pytest.raises(ConfigError, match="a threshold must be a finite number"):
        thresholds_for("classification", "int8", {"top1_agreement": value})


def test_nan_weight_model_exports_nothing(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="^export parity: the PyTorch fp32 reference gave"):
        tiny_export(tmp_path / "nan", monkeypatch, nan=True)
    assert list(tmp_path.iterdir()) == []


def test_resealed_edit_passes_the_digest_alone_but_not_a_signature_check(signed_bundle, keys, tmp_path):
    """What the digest does not guarantee (README): anyone can recompute it; only a trusted signature can't be."""
    bundle = tmp_path / "bundle"
    shutil.copytree(signed_bundle, bundle)
    _reseal_after_edit(bundle, keys)
    assert load(bundle).labels == ["benign", "benign", "normal"]
    with pytest.raises(BundleError, match="made for another digest"):
        load(bundle, trusted_keys=[keys["A.pub"]])


def test_a_folder_without_manifest_is_not_walked_as_a_bundle(tmp_path):
    """`pocus info ~` must say 'not a bundle' at once, not walk (or complain about links in) the whole tree."""
    os.symlink("/etc", tmp_path / "etc")
    with pytest.raises(BundleError, match="no manifest.json; this is not a pocus-edge bundle"):
        inspect_bundle(tmp_path)
