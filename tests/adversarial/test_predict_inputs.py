"""Adversarial inputs to `pocus predict` and the runtime: one case = one bad (or tricky) input and the exact
error or behaviour expected. Every refused `predict` call must also leave nothing behind (no OUT folder)."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from pocus_edge.errors import ConfigError, PocusError
from pocus_edge.runtime.images import InputError, load_gray
from pocus_edge.runtime.predict import run_predict


@pytest.fixture(scope="module")
def bundle(bundle_factory):
    return bundle_factory("onnx", "fp32")


def _png(path, seed=0, size=(24, 32), dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    hi = 65535 if dtype == np.uint16 else 255
    Image.fromarray(np.random.default_rng(seed).integers(0, hi, size, dtype=dtype)).save(path)
    return path


def _video(path, frames):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(frames):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _truncated_png(path):
    data = _png(path, 1, size=(64, 64)).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_jpeg(path):
    """Passes the up-front header check (JPEG has no CRCs) and fails while decoding, after a.png was predicted."""
    pixels = np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_crc_png(path):
    data = bytearray(_png(path, 2).read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # one flipped byte inside the compressed pixels
    path.write_bytes(bytes(data))
    return path


def _huge_png(path):
    """A valid PNG header claiming 9000 x 9000 pixels (a decompression bomb), a few hundred bytes on disk."""
    def chunk(kind, body):
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    header = (9000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def _fifo(path):
    os.mkfifo(path)
    return path


# id -> (build(tmp) -> run_predict keyword arguments, expected error type, message regex with {tmp} filled in)
REFUSED = {
    "missing-file": (lambda t: {"images": [t / "nope.png"]}, PocusError,
                     r"{tmp}/nope.png: no such image file or folder"),
    "one-good-one-missing": (lambda t: {"images": [_png(t / "ok.png"), t / "gone.png"]}, PocusError,
                             r"{tmp}/gone.png: no such image file or folder"),
    "empty-file": (lambda t: {"images": [_touch(t / "empty.png")]}, InputError,
                   r"{tmp}/empty.png: cannot read as an image \(UnidentifiedImageError"),
    "junk-bytes": (lambda t: {"images": [_write(t / "junk.png", b"not an image at all")]}, InputError,
                   r"{tmp}/junk.png: cannot read as an image"),
    "truncated-png": (lambda t: {"images": [_truncated_png(t / "cut.png")]}, InputError,
                      r"{tmp}/cut.png: cannot read as an image"),
    "truncated-jpeg-after-a-good-image": (lambda t: {"images": [_png(t / "a.png"), _truncated_jpeg(t / "b.jpg")]},
                                          InputError, r"{tmp}/b.jpg: cannot read as an image \(OSError: image file is "
                                          "truncated"),
    "png-bad-crc": (lambda t: {"images": [_bad_crc_png(t / "crc.png")]}, InputError,
                    r"{tmp}/crc.png: cannot read as an image \(SyntaxError: broken PNG file \(bad header checksum"),
    "16-bit-png": (lambda t: {"images": [_png(t / "deep.png", dtype=np.uint16)]}, InputError,
                   r"{tmp}/deep.png: 16-bit image \(mode I;16\); window it to 8 bits"),
    "decompression-bomb": (lambda t: {"images": [_huge_png(t / "bomb.png")]}, InputError,
                           r"{tmp}/bomb.png: 9000 x 9000 pixels exceeds the 64,000,000-pixel limit"),
    "empty-folder": (lambda t: {"images": [_mkdir(t / "empty")]}, PocusError,
                     r"{tmp}/empty: folder holds no image files \(.png, .jpg"),
    "folder-of-text": (lambda t: {"images": [_write(t / "notes" / "a.txt", b"x").parent]}, PocusError,
                       r"{tmp}/notes: folder holds no image files"),
    "folder-with-one-bad-image": (lambda t: {"images": [_png(t / "d" / "a.png").parent,
                                                        _write(t / "d" / "b.png", b"junk").parent]},
                                  InputError, r"{tmp}/d/b.png: cannot read as an image"),
    "video-as-image": (lambda t: {"images": [_write(t / "clip.mp4", b"\0" * 16)]}, PocusError,
                       r"{tmp}/clip.mp4: a video; pass it with --video FILE"),
    "fifo": (lambda t: {"images": [_fifo(t / "pipe.png")]}, PocusError,
             r"{tmp}/pipe.png: neither a regular file nor a folder"),
    "nothing-given": (lambda t: {"images": []}, PocusError, r"give at least one IMAGE \(file or folder\) or --video"),
    "out-is-a-file": (lambda t: {"images": [_png(t / "a.png")], "out": _write(t / "taken", b"x")}, ConfigError,
                      r"--out {tmp}/taken: exists and is a file"),
    "out-is-the-input-folder": (lambda t: {"images": [_png(t / "in" / "a.png").parent], "out": t / "in"},
                                ConfigError, r"--out {tmp}/in: is the input folder {tmp}/in; masks would mix"),
    "smooth-0.99": (lambda t: {"video": _video(t / "v.avi", 2), "smoothing": 0.99}, ConfigError,
                    r"--smooth 0.99: must lie in \[0, 0.95\]"),
    "smooth-negative": (lambda t: {"video": _video(t / "v.avi", 2), "smoothing": -0.1}, ConfigError,
                        r"--smooth -0.1: must lie in \[0, 0.95\]"),
    "smooth-nan": (lambda t: {"video": _video(t / "v.avi", 2), "smoothing": float("nan")}, ConfigError,
                   r"--smooth nan: must lie in \[0, 0.95\]"),
    "smooth-without-video": (lambda t: {"images": [_png(t / "a.png")], "smoothing": 0.5}, ConfigError,
                             r"--smooth applies to --video only"),
    "zero-frame-video": (lambda t: {"video": _video(t / "empty.avi", 0)}, PocusError,
                         r"{tmp}/empty.avi: no frame could be decoded"),
    "missing-video": (lambda t: {"video": t / "absent.avi"}, PocusError, r"{tmp}/absent.avi: no such video file"),
    "video-of-junk": (lambda t: {"video": _write(t / "junk.avi", b"junk" * 64)}, PocusError,
                      r"{tmp}/junk.avi: (OpenCV cannot open this video|no frame could be decoded)"),
}


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _mkdir(path):
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("case", list(REFUSED))
def test_predict_refuses_with_a_clear_error_and_writes_nothing(case, bundle, tmp_path):
    build, error, message = REFUSED[case]
    kwargs = {"images": [], "video": None, "out": tmp_path / "new" / "out", "smoothing": 0.0, **build(tmp_path)}
    existed = kwargs["out"].exists()
    with pytest.raises(error, match="^" + message.format(tmp=tmp_path)):
        run_predict(bundle, kwargs["images"], kwargs["video"], kwargs["out"], None, 1, kwargs["smoothing"])
    if not existed:
        assert not (tmp_path / "new").exists(), "a refused predict left an output folder behind"


ARRAYS = {
    "channel-first-rgb": (np.zeros((3, 32, 40), np.uint8), r"array: array of shape \(3, 32, 40\) looks channel-first "
                          r"\(C x H x W\).* pass array.transpose\(1, 2, 0\)"),
    "channel-first-rgba-looking": (np.zeros((3, 32, 4), np.uint8), r"array: array of shape \(3, 32, 4\) looks "
                                   r"channel-first.*pass array.transpose\(1, 2, 0\)"),
    "channel-first-single": (np.zeros((1, 32, 32), np.float32), r"array: array of shape \(1, 32, 32\) looks "
                             r"channel-first.*pass array\[0\]$"),
    "channel-first-4": (np.zeros((4, 16, 16), np.uint8), r"array: array of shape \(4, 16, 16\) looks channel-first"),
    "nan-pixels": (np.array([[0.5, np.nan], [0.1, 0.2]], np.float32), r"array: contains NaN or infinite values"),
    "inf-pixels": (np.array([[0.5, np.inf], [0.1, 0.2]]), r"array: contains NaN or infinite values"),
    "uint16-array": (np.zeros((8, 8), np.uint16), r"array: uint16 \(16-bit\) pixels; window them"),
    "float-0-255": (np.full((8, 8), 200.0), r"array: float values span \[200, 200\]; float input must lie in \[0, 1\]"),
    "bool-array": (np.zeros((8, 8), bool), r"array: unsupported dtype bool"),
    "4-d-batch": (np.zeros((2, 8, 8, 3), np.uint8), r"array: array of shape \(2, 8, 8, 3\); expected H x W"),
    "empty-array": (np.zeros((0, 8), np.uint8), r"array: empty image \(0 x 8\)"),
}


@pytest.mark.parametrize("case", list(ARRAYS))
def test_runtime_refuses_bad_arrays(case):
    array, message = ARRAYS[case]
    with pytest.raises(InputError, match="^" + message):
        load_gray(array)


def test_channels_last_and_wide_files_are_still_read(tmp_path):
    """The channel-first rule must not refuse real H x W x C arrays or a 3-row RGB file (PIL decodes channels last)."""
    assert load_gray(np.zeros((32, 40, 3), np.uint8)).shape == (32, 40)
    Image.fromarray(np.zeros((3, 50, 3), np.uint8)).save(tmp_path / "strip.png")
    assert load_gray(tmp_path / "strip.png").shape == (3, 50)


def _results(out):
    return json.loads((out / "results.json").read_text())["results"]


def test_same_name_in_two_folders(bundle, tmp_path):
    a, b = _png(tmp_path / "a" / "scan.png", 1), _png(tmp_path / "b" / "scan.png", 2)
    run_predict(bundle, [a, b], None, tmp_path / "out", None, 1, 0.0)
    assert [(r["source"], r["mask"]) for r in _results(tmp_path / "out")] == [
        (str(a), "a__scan_mask.png"), (str(b), "b__scan_mask.png")]


def test_same_stem_different_suffix(bundle, tmp_path):
    png, bmp = _png(tmp_path / "scan.png", 1), tmp_path / "scan.bmp"
    Image.open(png).save(bmp)
    run_predict(bundle, [png, bmp], None, tmp_path / "out", None, 1, 0.0)
    masks = [r["mask"] for r in _results(tmp_path / "out")]
    assert len(set(masks)) == 2 and all(m.startswith("scan_") and m.endswith("_mask.png") for m in masks)


def test_same_image_twice_and_via_folder(bundle, tmp_path):
    image = _png(tmp_path / "in" / "x.png")
    report = run_predict(bundle, [image, tmp_path / "in", image], None, tmp_path / "out", None, 1, 0.0)
    assert len(report["results"]) == 1 and len(report["duplicates_ignored"]) == 2


def test_upper_case_suffix_and_odd_names_in_a_folder(bundle, tmp_path):
    _png(tmp_path / "in" / "A SCAN.PNG", 1)
    _png(tmp_path / "in" / "tab\tand\nnewline.png", 2)
    report = run_predict(bundle, [tmp_path / "in"], None, tmp_path / "out", None, 1, 0.0)
    assert [r["mask"] for r in report["results"]] == ["A_SCAN_mask.png", "tab_and_newline_mask.png"]
    assert report["inputs"][0]["images_found"] == 2


def test_cli_refusals_are_one_error_line_exit_2(bundle, tmp_path):
    """Through the real CLI: exit code 2, one `error:` line, no traceback, no OUT folder."""
    _png(tmp_path / "a.png")
    for args, message in (([str(tmp_path / "missing")], "no such image file or folder"),
                          ([str(tmp_path / "a.png"), "--smooth", "0.99"], "--smooth applies to --video only")):
        proc = run_cli("predict", str(bundle), *args, "--out", str(tmp_path / "out"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().startswith("error:") and message in proc.stderr
        assert not (tmp_path / "out").exists()
