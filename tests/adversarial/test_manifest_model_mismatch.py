"""A manifest whose input shape or dtype does not describe its model file is refused at load (issue 16 item 8),
even when the bundle was re-sealed after the edit (a broken build pipeline, not an attacker)."""

from __future__ import annotations

import json
import shutil

import pytest

import pocus_edge.runtime as rt
from pocus_edge.runtime.integrity import seal
from pocus_edge.runtime.manifest import BundleError


def _edited(bundle_factory, tmp_path, target, precision, model, change):
    src = bundle_factory(target, precision, model=model)
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["inputs"][0])
    from pocus_edge.runtime.manifest import file_digest

    manifest["files"] = {n: file_digest(dst / n) for n in manifest["files"]}
    path.write_text(json.dumps(manifest, indent=2))
    seal(dst)
    return dst


# bundles the export tests make anyway (session cache): the U-Net's tflite int8 takes int8 NCHW input
CASES = {
    "onnx image size": ("onnx", "fp32", "classifier-resnet50", lambda i: i.update(shape=[1, 3, 128, 128])),
    "onnx dtype": ("onnx", "fp32", "classifier-resnet50", lambda i: i.update(dtype="uint8")),
    "tflite image size": ("tflite", "int8", "unet-resnet50", lambda i: i.update(shape=[1, 3, 32, 32])),
    "tflite dtype": ("tflite", "int8", "unet-resnet50", lambda i: i.update(dtype="float32")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_manifest_that_does_not_describe_the_model_is_refused(bundle_factory, tmp_path, case):
    target, precision, model, change = CASES[case]
    bundle = _edited(bundle_factory, tmp_path, target, precision, model, change)
    with pytest.raises(BundleError, match="the manifest does not describe this model: re-export"):
        rt.load(bundle)


def test_the_unedited_bundle_loads(bundle_factory):
    assert rt.load(bundle_factory("onnx", "fp32", model="classifier-resnet50")).task == "classification"
