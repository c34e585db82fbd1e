"""Adversarial DICOM inputs: each case is one bad file and the exact error training (read_frame) and the runtime
(predict's up-front check, load_gray) give; `pocus predict` refuses it as one error line, exit 2, before any model
is opened and without creating OUT."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")
from conftest import run_cli  # noqa: E402
from test_dicom import region, write_dicom  # noqa: E402

from pocus_edge.data.dicom import DicomError  # noqa: E402
from pocus_edge.data.readers import read_frame  # noqa: E402
from pocus_edge.runtime.images import InputError, check_image_file, load_gray  # noqa: E402

PIXELS = np.full((1, 16, 16), 9, dtype=np.uint8)


def _png_named_dcm(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)


def _no_pixel_data(path):
    ds = write_dicom(path, PIXELS)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)


def _truncated_pixels(path):
    write_dicom(path, PIXELS)
    data = path.read_bytes()
    path.write_bytes(data[:-100])


def _bad_photometric(path):
    write_dicom(path, PIXELS, "HSV")


def _region_outside(path):
    write_dicom(path, PIXELS, regions=[region(4, 4, 30, 10)])


def _zero_window(path):
    write_dicom(path, PIXELS.astype(np.uint16), WindowCenter=10, WindowWidth=0)


CASES = {
    "png named .dcm": (_png_named_dcm, "not a readable DICOM file", True),
    "no pixel data": (_no_pixel_data, "DICOM file has no pixel data", True),
    "unsupported photometric": (_bad_photometric, "unsupported photometric interpretation 'HSV'", True),
    "truncated pixel data": (_truncated_pixels, "cannot decode frame 0", False),
    "region outside the frame": (_region_outside, "ultrasound region x 4..30, y 4..10 does not fit", False),
    "window width 0": (_zero_window, "Window Width 0 is below 1", False),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_dicom_is_refused_with_its_reason(tmp_path, name):
    make, message, found_by_header = CASES[name]
    path = tmp_path / "bad.dcm"
    make(path)
    with pytest.raises(DicomError, match=message):
        read_frame(path)
    with pytest.raises(InputError, match=message):
        load_gray(path)
    if found_by_header:  # predict's cheap up-front check finds it before any model runs
        with pytest.raises(InputError, match=message):
            check_image_file(path)


def test_frame_beyond_the_cine_is_an_error(tmp_path):
    write_dicom(tmp_path / "loop.dcm", np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(DicomError, match=r"frame 5 does not exist \(the file has 2 frame\(s\)\)"):
        read_frame(tmp_path / "loop.dcm", 5)


def test_predict_refuses_a_bad_dicom_in_one_line(tmp_path):
    _no_pixel_data(tmp_path / "bad.dcm")
    proc = run_cli("predict", str(tmp_path / "no-bundle"), str(tmp_path / "bad.dcm"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "DICOM file has no pixel data" in proc.stderr
    assert not (tmp_path / "o").exists()
