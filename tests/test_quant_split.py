"""int8 mixed precision chooses on one part of the held-out frames and the bundle's parity is judged on the other.

Without the split the final parity check reused the frames the float layers were picked on (tuning on the test
frames). The parts are disjoint by name and by content, keep a cine loop's frames together, do not depend on
the order frames arrive in, and calibration_frames.json lists both.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocus_edge.errors import ConfigError
from pocus_edge.export.data import ImageSet
from pocus_edge.export.quantize_calib import frame_digest
from pocus_edge.export.quantize_mixed import searches, split_held_out


def _frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((8, 8), dtype=np.float32) for _ in range(count)]


def _set(images, names) -> ImageSet:
    return ImageSet(list(images), list(names), "held/out")


def test_parts_are_disjoint_grouped_and_independent_of_order():
    images = _frames(10)
    names = [f"img{i}.png" for i in range(6)] + ["clip.mp4#0", "clip.mp4#1", "clip.mp4#2"] + ["copy_of_img0.png"]
    images[9] = images[0].copy()  # the same pixels under another name
    search, check = split_held_out(_set(images, names))
    assert len(search.images) + len(check.images) == 10 and min(len(search.images), len(check.images)) >= 2
    assert set(search.names).isdisjoint(check.names)
    assert {frame_digest(x) for x in search.images}.isdisjoint(frame_digest(x) for x in check.images)
    part_of = {**{n: "search" for n in search.names}, **{n: "check" for n in check.names}}
    assert len({part_of[n] for n in names if n.startswith("clip")}) == 1  # a clip's frames stay together
    assert part_of["img0.png"] == part_of["copy_of_img0.png"]  # and so do equal pixels under two names
    assert check.origin == "held/out" and "search" in search.origin
    order = np.random.default_rng(1).permutation(10)
    search2, check2 = split_held_out(_set([images[i] for i in order], [names[i] for i in order]))
    assert set(search2.names) == set(search.names) and set(check2.names) == set(check.names)


@pytest.mark.parametrize("images,names", [
    (_frames(3), ["a.png", "b.png", "c.png"]),  # 2 / 1: the check part would hold one frame
    (_frames(6), [f"clip.mp4#{i}" for i in range(6)]),  # one cine loop cannot be split
])
def test_too_few_frames_to_split_is_a_clear_error(images, names):
    with pytest.raises(ConfigError, match=r"at least 2 frames.*--parity-data DIR with more real frames"):
        split_held_out(_set(images, names))


@pytest.mark.parametrize("options,expected", [
    ({"mixed_precision": True, "float_layers": None, "calibration_method": "minmax"}, True),
    ({"mixed_precision": False, "float_layers": None, "calibration_method": "auto"}, True),
    ({"mixed_precision": True, "float_layers": "conv1", "calibration_method": "minmax"}, False),
    ({"mixed_precision": False, "float_layers": None, "calibration_method": "minmax"}, False),
    ({"io": "float", "mixed_precision": False, "float_layers": None}, False),  # tflite --io float (preflight: off)
    ({"io": "int8", "mixed_precision": True, "float_layers": None}, True),  # tflite int8 searches like onnx
])
def test_which_exports_split(options, expected):
    assert searches(options) is expected


def test_bundle_records_both_lists_and_checks_parity_on_the_other_part(tmp_path, phantom_dir):
    pytest.importorskip("onnxruntime")
    from pocus_edge.export import export

    manifest = export("unet-resnet18", "onnx", "int8", tmp_path / "b", image_size=32, calib_data=phantom_dir,
                      parity_thresholds={"dice_mean": 0.0, "dice_min": 0.0, "prob_abs_diff_mean": 1.0})
    frames = json.loads((tmp_path / "b" / "calibration_frames.json").read_text())
    search, parity = frames["mixed_precision_search"], frames["parity"]
    assert search["count"] >= 2 and parity["count"] >= 2
    assert {f["name"] for f in search["frames"]}.isdisjoint(f["name"] for f in parity["frames"])
    assert {f["sha256"] for f in search["frames"]}.isdisjoint(f["sha256"] for f in parity["frames"])
    calib = {f["sha256"] for f in frames["calibration"]["frames"]}
    assert calib.isdisjoint(f["sha256"] for f in search["frames"] + parity["frames"])
    assert manifest["target_options"]["mixed_precision"]["frames"] == search["count"]
    assert json.loads((tmp_path / "b" / "parity.json").read_text())["images"] == parity["count"]
