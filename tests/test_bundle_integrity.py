"""Bundle integrity: one digest over every file (bundle.sha256), optional Ed25519 signatures, strict parity.

Bundles here come from a tiny classifier (a 3x3 conv and a linear layer at 32 px) exported through the real
`export()` path, so each export takes about a second.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from torch import nn

from pocus_edge.errors import ConfigError
from pocus_edge.export import export
from pocus_edge.export.base import ExportError
from pocus_edge.export.parity import compare, judge, thresholds_for
from pocus_edge.io import atomic_write_json
from pocus_edge.models.tasks import TaskSpec
from pocus_edge.runtime import BundleError, load, verify_bundle
from pocus_edge.runtime.integrity import (
    DIGEST_NAME,
    SIGNATURE_NAME,
    IntegrityError,
    generate_keypair,
    render_listing,
    seal,
)
from pocus_edge.runtime.manifest import inspect_bundle

LABELS = ["benign", "malignant", "normal"]


def tiny_classifier(nan: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, len(LABELS))).eval()
    if nan:
        with torch.no_grad():
            net[0].weight[0, 0, 0, 0] = float("nan")
    return net


def tiny_export(out: Path, monkeypatch, nan: bool = False, **options) -> dict:
    """export() of the tiny classifier to OUT (onnx fp32, 32 px, 8 parity images)."""
    spec = TaskSpec(name="tiny-classifier", task="classification", encoder="tiny", labels=list(LABELS),
                    image_size=32, threshold=None, source="test")
    monkeypatch.setattr("pocus_edge.export.api.resolve_model", lambda model, size: (tiny_classifier(nan), spec))
    return export("tiny", "onnx", "fp32", out, image_size=32, num_parity=8, **options)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    private, public, _ = generate_keypair(root / "a")
    other_private, other_public, _ = generate_keypair(root / "b")
    return {"private": private, "public": public, "other_private": other_private, "other_public": other_public}


def test_export_writes_canonical_digest_last_and_load_reports_it(tmp_path, monkeypatch):
    bundle = tmp_path / "b"
    tiny_export(bundle, monkeypatch)
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert {"bundle.sha256", "manifest.json", "model.onnx", "parity.json", "reference/vectors.json"} <= set(names)
    text = (bundle / DIGEST_NAME).read_text()
    expected = {n: hashlib.sha256((bundle / n).read_bytes()).hexdigest() for n in names if n != DIGEST_NAME}
    assert text == "".join(f"{expected[n]}  {n}\n" for n in sorted(expected))  # sha256sum format, sorted
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert load(bundle).digest == digest
    manifest, sealed = inspect_bundle(bundle)
    assert sealed.digest == digest and sealed.signed_by is None
    assert manifest["labels"] == LABELS


def test_listing_sorts_by_utf8_bytes_and_nests_folders(tmp_path):
    (tmp_path / "model.mlpackage" / "Data").mkdir(parents=True)
    for rel in ("b.txt", "a-b/x", "model.mlpackage/Data/w.bin", "Z"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    seal(tmp_path)
    paths = [line.split("  ", 1)[1] for line in (tmp_path / DIGEST_NAME).read_text().splitlines()]
    assert paths == ["Z", "a-b/x", "b.txt", "model.mlpackage/Data/w.bin"]
    assert render_listing({"b": "0" * 64, "a": "1" * 64}) == f"{'1' * 64}  a\n{'0' * 64}  b\n"


def test_signed_export_verifies_with_its_key_only(tmp_path, monkeypatch, keys):
    bundle = tmp_path / "signed"
    tiny_export(bundle, monkeypatch, sign_key=keys["private"])
    record = json.loads((bundle / SIGNATURE_NAME).read_text())
    assert record["algorithm"] == "ed25519" and record["digest"] == load(bundle).digest
    predictor = load(bundle, trusted_keys=[keys["other_public"], keys["public"]])
    assert predictor.digest == record["digest"]
    with pytest.raises(IntegrityError, match="not among the trusted keys"):
        load(bundle, trusted_keys=[keys["other_public"]])
    with pytest.raises(ConfigError, match="list is empty"):
        load(bundle, trusted_keys=[])


def test_wrong_sign_key_fails_export_and_leaves_nothing(tmp_path, monkeypatch, keys):
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match="--sign .*public key"):
        tiny_export(out, monkeypatch, sign_key=keys["public"])
    assert list(tmp_path.iterdir()) == []


def test_nan_weights_fail_export_parity_naming_the_stage(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match=r"^export parity: the PyTorch fp32 reference gave \d+ non-finite"):
        tiny_export(tmp_path / "nan", monkeypatch, nan=True)
    assert list(tmp_path.iterdir()) == []


def test_compare_refuses_non_finite_exported_outputs():
    ref = np.zeros((2, 3), np.float32)
    out = ref.copy()
    out[1, 2] = np.inf
    with pytest.raises(ExportError, match="export parity: the exported model gave 1 non-finite"):
        compare("classification", ref, out, None)


def test_judge_fails_nan_metrics_and_thresholds_must_be_finite():
    thresholds = thresholds_for("embedding", "fp32")
    assert judge({"cosine_min": math.nan, "cosine_mean": 1.0}, thresholds) == ["cosine_min is nan, not a finite number"]
    with pytest.raises(ConfigError, match="dice_mean=nan: a threshold must be a finite number"):
        thresholds_for("segmentation", "fp32", {"dice_mean": float("nan")})


def test_json_writes_are_strict(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        atomic_write_json(tmp_path / "x.json", {"dice": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_keygen_cli_writes_private_key_0600_and_never_overwrites(tmp_path):
    result = run_cli("keygen", "--out", str(tmp_path / "k"))
    assert result.returncode == 0, result.stderr
    private, public = tmp_path / "k" / "pocus-signing-key.pem", tmp_path / "k" / "pocus-signing-key.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    again = run_cli("keygen", "--out", str(tmp_path / "k"))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_cli_sign_info_and_predict_with_trusted_keys(tmp_path, monkeypatch, keys):
    from pocus_edge.cli import _run, app

    bundle = tmp_path / "b"
    tiny_export(tmp_path / "unused", monkeypatch)  # installs the tiny model for the in-process CLI export below
    _run(app, ["export", "tiny", "-t", "onnx", "--image-size", "32", "--num-parity", "2", "--out", str(bundle),
               "--sign", str(keys["private"]), "--quiet"])
    digest = hashlib.sha256((bundle / DIGEST_NAME).read_bytes()).hexdigest()
    info = run_cli("info", str(bundle), "--json", "--trusted-key", str(keys["public"]))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["bundle_seal"] == {
        "digest": digest, "signed_by": json.loads((bundle / SIGNATURE_NAME).read_text())["key_sha256"],
        "signature_verified": True}
    table = run_cli("info", str(bundle), env={"COLUMNS": "200"})
    assert f"sha256:{digest}" in table.stdout and "not checked" in table.stdout
    image = tmp_path / "scan.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(image)
    refused = run_cli("predict", str(bundle), str(image), "--out", str(tmp_path / "p"),
                      "--trusted-key", str(keys["other_public"]))
    assert refused.returncode == 2 and "not among the trusted keys" in refused.stderr
    assert not (tmp_path / "p" / "results.json").exists()
    ok = run_cli("predict", str(bundle), str(image), "--out", str(tmp_path / "q"), "--trusted-key",
                 str(keys["public"]), "--json")
    assert ok.returncode == 0, ok.stderr


def test_runtime_stays_free_of_cryptography_without_signatures(tmp_path, monkeypatch):
    bundle = tmp_path / "b"
    tiny_export(bundle, monkeypatch)
    code = ("import sys; import pocus_edge.runtime as r; r.load(sys.argv[1]); "
            "assert 'cryptography' not in sys.modules and 'torch' not in sys.modules")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr


def test_old_bundle_without_digest_is_refused_with_a_re_export_hint(tmp_path, monkeypatch):
    bundle = tmp_path / "b"
    tiny_export(bundle, monkeypatch)
    (bundle / DIGEST_NAME).unlink()
    with pytest.raises(BundleError, match=r"no bundle.sha256.*Re-export it with pocus-export"):
        verify_bundle(bundle)


def test_folder_entries_are_checked_from_the_verified_hashes(tmp_path):
    """An .mlpackage is listed in the manifest as one folder digest; load computes it from the hashes it verified."""
    from pocus_edge.runtime.integrity import file_hashes
    from pocus_edge.runtime.manifest import _listed_digest, file_digest

    package = tmp_path / "model.mlpackage"
    for rel in ("Data/a-b/x", "Data/a/x", "Data/a.b", "Manifest.json"):
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(rel)
    hashes = file_hashes(tmp_path)
    assert _listed_digest(hashes, "model.mlpackage") == file_digest(package)
    assert _listed_digest(hashes, "model.mlpack") is None
