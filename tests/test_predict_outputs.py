"""`pocus predict` outputs: unique names per input, folders, staging (a failure leaves nothing new), non-finite
model outputs as errors naming the stage, video masks + overlay mp4, file modes, skipped_files.txt escaping."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from pocus_edge.errors import ConfigError, PocusError
from pocus_edge.runtime import load
from pocus_edge.runtime import predict as predict_module
from pocus_edge.runtime.predict import output_stems, run_predict
from pocus_edge.runtime.results import NonFiniteOutputError, check_finite


@pytest.fixture(scope="module")
def bundle(bundle_factory):
    return bundle_factory("onnx", "fp32")


def _png(path, seed, size=(40, 56)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _predict(bundle, inputs, out, video=None, smoothing=0.0):
    return run_predict(bundle, list(inputs), video, out, None, 1, smoothing)


def _nan_after(monkeypatch, bundle, good_calls):
    """Make predict's predictor return NaN from call good_calls + 1 on (a model that broke mid-run)."""
    predictor = load(bundle, threads=1)
    real, calls = predictor.backend.run, []

    def run(x):
        calls.append(1)
        out = real(x)
        return out if len(calls) <= good_calls else np.full_like(out, np.nan)

    predictor.backend.run = run
    monkeypatch.setattr(predict_module, "load", lambda *a, **k: predictor)
    return predictor


def test_same_file_name_in_two_folders_gets_two_masks(bundle, tmp_path):
    """Old code wrote one scan_mask.png (b's) and pointed both inputs at it."""
    a, b = _png(tmp_path / "a" / "scan.png", 1), _png(tmp_path / "b" / "scan.png", 2, size=(30, 70))
    report = _predict(bundle, [a, b], tmp_path / "out")
    masks = [r["mask"] for r in report["results"]]
    assert masks == ["a__scan_mask.png", "b__scan_mask.png"]
    predictor = load(bundle, threads=1)
    for record, source in zip(report["results"], (a, b), strict=True):
        assert record["source"] == str(source)
        saved = np.asarray(Image.open(tmp_path / "out" / record["mask"]))
        assert np.array_equal(saved, predictor(source).mask * 255)  # each input's own mask, own size
        assert (tmp_path / "out" / record["overlay"]).is_file()
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["mask"] for r in on_disk["results"]] == masks


def test_output_stems_are_unique_safe_and_stable(tmp_path):
    one = tmp_path / "x" / "scan.png"
    assert output_stems([one]) == ["scan"]  # a single file keeps its plain name
    same_dir = [tmp_path / "Scan.png", tmp_path / "scan.png", tmp_path / "scan.jpg"]
    stems = output_stems(same_dir)
    assert len({s.lower() for s in stems}) == 3 and all(s.startswith(("Scan_", "scan_")) for s in stems)
    assert output_stems(same_dir) == stems  # stable
    odd = [tmp_path / "d" / "a b\nc.png", tmp_path / "d" / "..hidden.png", tmp_path / "d" / ("l" * 300 + ".png")]
    assert output_stems(odd) == ["a_b_c", "hidden", "l" * 120]


def test_duplicates_are_predicted_once(bundle, tmp_path):
    image = _png(tmp_path / "in" / "one.png", 3)
    report = _predict(bundle, [image, image, tmp_path / "in"], tmp_path / "out")
    assert len(report["results"]) == 1 and report["duplicates_ignored"] == [str(image), str(image)]
    assert "2 duplicate input(s) predicted once" in predict_module.summary_line(report)


def test_folder_input_recursive_sorted_and_counted(bundle, tmp_path):
    data = tmp_path / "data"
    for name in ("b.png", "sub/a.JPG", "sub/deeper/c.bmp"):
        _png(data / name, len(name)) if not name.endswith("JPG") else \
            Image.fromarray(np.full((20, 20), 9, np.uint8)).save(_ensure(data / name), format="JPEG")
    (data / "notes.txt").write_text("not an image")
    _png(data / ".hidden.png", 9)
    _png(data / "pred" / "old_mask.png", 10)  # the --out folder inside the input is not an input
    report = _predict(bundle, [data], data / "pred")
    assert [r["source"] for r in report["results"]] == [str(data / p) for p in ("b.png", "sub/a.JPG",
                                                                                  "sub/deeper/c.bmp")]
    assert [r["mask"] for r in report["results"]] == ["b_mask.png", "sub__a_mask.png", "sub__deeper__c_mask.png"]
    assert report["inputs"] == [{"path": str(data), "kind": "folder", "images_found": 3}]
    assert f"3 image(s) (3 in {data})" in predict_module.summary_line(report)


def _ensure(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_cli_predict_folder_and_missing_file_leave_no_debris(bundle, tmp_path):
    _png(tmp_path / "data" / "x.png", 1)
    ok = run_cli("predict", str(bundle), str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert f"1 image(s) (1 in {tmp_path / 'data'})" in " ".join(ok.stderr.split())  # rich wraps lines
    bad = run_cli("predict", str(bundle), str(tmp_path / "data" / "x.png"), str(tmp_path / "nope.png"),
                  "--out", str(tmp_path / "new" / "out"))
    assert bad.returncode == 2 and f"error: {tmp_path / 'nope.png'}: no such image file or folder" in bad.stderr
    assert not (tmp_path / "new").exists()  # old code created the (empty) folder first


def test_nan_output_is_an_error_naming_stage_and_nothing_is_written(bundle, tmp_path, monkeypatch):
    a, b = _png(tmp_path / "a.png", 1), _png(tmp_path / "b.png", 2)
    _nan_after(monkeypatch, bundle, good_calls=1)
    with pytest.raises(NonFiniteOutputError, match=rf"^predict: model output of {bundle} on {b} holds NaN "):
        _predict(bundle, [a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # a's mask was staged, never published
    assert os.listdir(tmp_path) == ["a.png", "b.png"]


def test_failure_in_existing_out_keeps_old_results(bundle, tmp_path, monkeypatch):
    out = tmp_path / "out"
    a, b = _png(tmp_path / "a.png", 1), _png(tmp_path / "b.png", 2)
    _predict(bundle, [a], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _nan_after(monkeypatch, bundle, good_calls=1)
    with pytest.raises(NonFiniteOutputError):
        _predict(bundle, [b, a], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no b mask, no hidden staging folder


def test_predictor_refuses_non_finite_output(bundle):
    """The runtime API too: thresholding NaN used to give an empty mask."""
    predictor = load(bundle, threads=1)
    predictor.backend.run = lambda x: np.full((x.shape[0], 1, 64, 64), np.inf, np.float32)
    with pytest.raises(NonFiniteOutputError, match=r"model output holds inf \(4096 inf of 4096 values\)"):
        predictor(np.zeros((20, 20), np.uint8))
    check_finite(np.zeros(3))
    with pytest.raises(NonFiniteOutputError, match=r"NaN and inf \(1 NaN, 1 inf of 3 values\)"):
        check_finite(np.array([np.nan, np.inf, 0.0]))


def test_eval_refuses_non_finite_output(phantom_dir):
    from pocus_edge.finetune.data import read_samples
    from pocus_edge.finetune.evaluate import evaluate_outputs

    samples = read_samples(phantom_dir, "segmentation")[:3]

    def predict(grays):
        out = np.zeros((len(grays), 1, 8, 8), np.float32)
        out[-1, 0, 0, 0] = np.nan
        return out

    with pytest.raises(NonFiniteOutputError, match=rf"^eval of m: model output on {samples[2].image} holds NaN"):
        evaluate_outputs("segmentation", samples, ["background", "lesion"], predict, stage="eval of m")


def test_video_masks_overlay_mp4_and_zero_frames(bundle, tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "loop.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.write(cv2.cvtColor(rng.integers(0, 256, (48, 64), dtype=np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()
    scan = _png(tmp_path / "loop_00000.png", 4)  # old flat frame names collided with an image like this
    report = _predict(bundle, [scan], tmp_path / "out", video=video, smoothing=0.5)
    masks = [r["mask"] for r in report["results"]]
    assert masks == ["loop_00000_mask.png"] + [f"loop_frames/{i:05d}_mask.png" for i in range(3)]
    assert all((tmp_path / "out" / m).is_file() for m in masks)
    assert report["video"]["frames"] == 3 and report["video"]["overlay"] == "loop_overlay.mp4"
    assert report["video"]["overlay_padding_bottom_right"] == [0, 0]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "loop_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and capture.read()[1].shape == (48, 64, 3)
    capture.release()
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    with pytest.raises(PocusError, match="no frame could be decoded"):
        _predict(bundle, [], tmp_path / "out2", video=empty)
    assert not (tmp_path / "out2").exists()
    with pytest.raises(ConfigError, match=r"--smooth 0.99: must lie in \[0, 0.95\]"):
        _predict(bundle, [], tmp_path / "out3", video=video, smoothing=0.99)


def test_overlay_video_pads_odd_sizes_instead_of_cropping(tmp_path):
    """mp4v silently drops an odd row/column; the overlay is padded at the bottom/right and says so."""
    cv2 = pytest.importorskip("cv2")
    from pocus_edge.runtime.stream import OverlayVideo

    video = OverlayVideo(tmp_path / "o.mp4", 10)
    for _ in range(2):
        video.write(np.full((47, 65, 3), 200, np.uint8))
    video.close()
    assert video.error is None and video.padding == (1, 1)
    capture = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    frame = capture.read()[1]
    capture.release()
    assert frame.shape == (48, 66, 3) and frame[:47, :65].mean() > 190 and frame[47:, :].mean() < 20


def test_atomic_writes_honour_the_umask(tmp_path):
    from pocus_edge.io import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640  # mkstemp alone gave 0600
    from pocus_edge.io import atomic_write

    atomic_write(tmp_path / "key", lambda p: p.write_text("secret"), mode=0o600)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600


def test_predict_outputs_honour_the_umask(bundle, tmp_path):
    old = os.umask(0o022)
    try:
        _predict(bundle, [_png(tmp_path / "a.png", 1)], tmp_path / "out")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "out", *(tmp_path / "out").iterdir()]}
    assert modes == {"out": 0o755, "a_mask.png": 0o644, "a_overlay.png": 0o644, "results.json": 0o644}


def test_skipped_files_escape_newlines_and_tabs(tmp_path):
    from pocus_edge.data.corpus import Corpus

    corpus = Corpus(frames=[], skipped=[("odd\tname.png", "cannot read:\nline two\\x")],
                    duplicates=[("a\nb.png", "orig.png")])
    corpus.write_skipped(tmp_path / "skipped_files.txt")
    lines = (tmp_path / "skipped_files.txt").read_text().splitlines()
    assert lines == ["odd\\tname.png\tcannot read:\\nline two\\\\x", "a\\nb.png\tduplicate of orig.png"]
    assert [line.split("\t") for line in lines][0] == ["odd\\tname.png", "cannot read:\\nline two\\\\x"]
