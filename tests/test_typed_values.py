"""Typed values (issue 19 item 4): the verified-bundle object, ExportConfig, and the bench row type."""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path

import pytest

import pocus_edge.runtime.integrity as integrity
import pocus_edge.runtime.manifest as manifest_mod
from pocus_edge.runtime.manifest import BundleError, forget_verified, verified_bundle, verify_bundle


@pytest.fixture
def hash_counter(monkeypatch):
    """Counts sha256 computations per file name (every path that hashes bundle files goes through these two)."""
    calls: collections.Counter = collections.Counter()
    real = manifest_mod.sha256_file

    def counting(path, *args, **kwargs):
        calls[Path(path).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(integrity, "sha256_file", counting)
    monkeypatch.setattr(manifest_mod, "sha256_file", counting)
    forget_verified()
    yield calls
    forget_verified()


@pytest.fixture
def old_files(monkeypatch):
    """Treat the test's just-written files as older than the racy window (files of a real bundle usually are)."""
    monkeypatch.setattr(manifest_mod, "RACY_NS", 0)


def _copy(bundle_factory, tmp_path, counter, name="b") -> Path:
    """A private copy of a small bundle; the hashes its export made are not counted."""
    out = tmp_path / name
    shutil.copytree(bundle_factory("onnx", "fp32", model="encoder-resnet50"), out)
    counter.clear()
    return out


def test_a_bundle_is_hashed_once_per_process(bundle_factory, tmp_path, hash_counter, old_files):
    bundle = _copy(bundle_factory, tmp_path, hash_counter)
    first = verify_bundle(bundle)
    for _ in range(3):
        assert verify_bundle(bundle) == first
    assert hash_counter["model.onnx"] == 1 and hash_counter["manifest.json"] == 1
    first["name"] = "changed by a caller"  # callers get copies: the remembered manifest stays as verified
    assert verify_bundle(bundle)["name"] != "changed by a caller"


def test_a_rewritten_file_is_hashed_again_and_refused(bundle_factory, tmp_path, hash_counter, old_files):
    bundle = _copy(bundle_factory, tmp_path, hash_counter)
    verify_bundle(bundle)
    model = bundle / "model.onnx"
    st = model.stat()
    data = bytearray(model.read_bytes())
    data[-1] ^= 1  # same size, then the old mtime put back: only ctime shows the write
    model.write_bytes(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(BundleError, match=r"model.onnx|digest"):
        verify_bundle(bundle)
    assert hash_counter["model.onnx"] == 2


def test_an_added_file_is_noticed(bundle_factory, tmp_path, hash_counter, old_files):
    bundle = _copy(bundle_factory, tmp_path, hash_counter)
    verify_bundle(bundle)
    (bundle / "extra.txt").write_text("x")
    with pytest.raises(BundleError, match="extra.txt"):
        verify_bundle(bundle)


def test_recently_written_bundles_are_not_remembered(bundle_factory, tmp_path, hash_counter, monkeypatch):
    """Files written within the racy window could change within the same timestamp tick: hash them every time."""
    # the window made an hour wide: the copy keeps the factory's mtimes, which a loaded machine can leave > 2 s old
    monkeypatch.setattr(manifest_mod, "RACY_NS", 3600 * 10**9)
    bundle = _copy(bundle_factory, tmp_path, hash_counter)
    verify_bundle(bundle)
    verify_bundle(bundle)
    assert hash_counter["model.onnx"] == 2
    assert verified_bundle(bundle).hashes["model.onnx"] == verify_bundle(bundle)["files"]["model.onnx"]


def test_suite_run_hashes_each_reused_bundle_once(bundle_factory, tmp_path, hash_counter, old_files, monkeypatch):
    """Before the verified-bundle object one suite run hashed model.onnx 8 times (6 verifications + 2 latency
    rows at 2 thread counts); now once."""
    import yaml

    from pocus_edge.bench import latency, suite
    from pocus_edge.bench.rows import read_rows

    monkeypatch.setattr(latency, "cold_start", lambda bundle, threads: {"cold_start_ms": 1.0, "peak_rss_mb": 1.0})
    out = tmp_path / "suite"
    _copy(bundle_factory, out / "bundles", hash_counter, "enc-onnx-fp32")  # reused: same exporter, built-in model
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"out": str(out), "image_size": 64, "models": {"enc": "encoder-resnet50"},
                                    "targets": {"onnx": ["fp32"]}, "threads": [1, 2], "warmup": 1, "runs": 2,
                                    "baselines": False}))
    assert suite.run_suite(path)["rows"] == 2
    assert hash_counter["model.onnx"] == 1, dict(hash_counter)
    rows = read_rows(out / "latency.json")
    expected = verify_bundle(out / "bundles" / "enc-onnx-fp32")["files"]["model.onnx"][:16]
    assert {r["model_sha256"] for r in rows} == {expected}


def test_export_config_splits_fields_from_target_options():
    from pocus_edge.export.base import ExportConfig

    config = ExportConfig.of("unet-resnet50", "tflite", "int8", "out", image_size=64, calib_data="frames", nhwc=True,
                             io="float")
    assert (config.image_size, config.calib_data, config.num_parity) == (64, "frames", 32)
    assert config.options == {"nhwc": True, "io": "float"}
    assert config.to_json()["out"] == "out" and ExportConfig.of("m", "onnx", out=Path("b")).to_json()["out"] == "b"


def test_export_is_a_thin_wrapper_and_unknown_options_are_still_refused(monkeypatch):
    from pocus_edge.errors import ConfigError
    from pocus_edge.export import api
    from pocus_edge.export.base import ExportConfig

    seen = []
    monkeypatch.setattr(api, "export_config", lambda config: seen.append(config) or {"bundle": "b"})
    assert api.export("m", "onnx", overwrite=True, explain=True) == {"bundle": "b"}
    assert seen == [ExportConfig("m", "onnx", overwrite=True, options={"explain": True})]
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"export option\(s\) 'nchw' unknown\. Did you mean 'nhwc'\?"):
        api.export("unet-resnet50", "tflite", nchw=True)


def test_cli_builds_the_export_config(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from pocus_edge.cli import app
    from pocus_edge.export import api

    seen = []
    monkeypatch.setattr(api, "export_config", lambda config: seen.append(config) or {"bundle": str(tmp_path)})
    result = CliRunner().invoke(app, ["export", "unet-resnet50", "-t", "tflite", "-p", "int8", "--calib-data",
                                      str(tmp_path), "--nhwc", "--no-parity", "--parity-threshold", "dice_mean=0.9",
                                      "--batch", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert (config.model, config.target, config.precision, config.calib_data) == ("unet-resnet50", "tflite", "int8",
                                                                                   tmp_path)
    assert config.parity is False and config.parity_thresholds == {"dice_mean": 0.9} and config.dynamic_batch is False
    assert config.options["nhwc"] is True and config.options["io"] is None


@pytest.mark.parametrize("task", ["segmentation", "classification", "embedding"])
def test_task_model_fixture_gives_each_task_its_output(task_model, task):
    import torch

    net, spec = task_model(task)
    assert spec.task == task and task_model(task)[0] is net  # built once per session
    with torch.no_grad():
        out = net(torch.zeros(1, 3, spec.image_size, spec.image_size))
    expected = {"segmentation": (1, 1, spec.image_size, spec.image_size), "classification": (1, len(spec.labels)),
                "embedding": (1, 2048)}[task]
    assert tuple(out.shape) == expected
