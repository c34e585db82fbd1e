"""DICOM in and out: training and runtime decode a file to identical pixels (one function, data/dicom.py) for
monochrome (MONOCHROME1/2, 8- and 16-bit, windowed), colour (RGB, YBR_FULL, JPEG YBR_FULL_422) and cine (RLE)
files; the Sequence of Ultrasound Regions crops and gives the spacing (else Pixel Spacing, else none); a compressed
file without a decoder names what to install; `pocus predict` on a .dcm writes masks and a DICOM SEG that highdicom
reads back and that points at its source. Fixtures are generated here with pydicom; nothing is committed."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from pocus_edge.data.dicom import DicomError, decode_dicom, iter_frames, window  # noqa: E402
from pocus_edge.data.readers import read_frame  # noqa: E402
from pocus_edge.errors import PocusError  # noqa: E402
from pocus_edge.runtime.images import InputError, check_image_file, load_gray  # noqa: E402

US_IMAGE, US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1"
RNG = np.random.default_rng(7)


def region(x0, y0, x1, y1, dx=0.02, dy=0.025, units=3, spatial=1, data_type=1) -> dict:
    """One Sequence of Ultrasound Regions item (deltas in cm when units is 3)."""
    return {"RegionSpatialFormat": spatial, "RegionDataType": data_type, "RegionFlags": 0,
            "RegionLocationMinX0": x0, "RegionLocationMinY0": y0, "RegionLocationMaxX1": x1,
            "RegionLocationMaxY1": y1, "PhysicalUnitsXDirection": units, "PhysicalUnitsYDirection": units,
            "PhysicalDeltaX": dx, "PhysicalDeltaY": dy}


def write_dicom(path, pixels, photometric="MONOCHROME2", regions=(), syntax=ExplicitVRLittleEndian,
                encapsulated=None, **attrs):
    """A complete ultrasound DICOM file: pixels F x H x W (x 3); F > 1 makes a multi-frame (cine) image."""
    frames = pixels.shape[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME if frames > 1 else US_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax == RLELossless else syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "PHANTOM", "Phantom^Test", "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "US", 1, 1
    ds.Manufacturer = "synthetic"
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
    if frames > 1:
        ds.NumberOfFrames, ds.FrameTime, ds.FrameIncrementPointer = frames, 33.3, 0x00181063
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3 if colour else 1), photometric
    if colour:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if encapsulated is not None:
        ds.PixelData = encapsulate(encapsulated)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = (pixels if frames > 1 else pixels[0]).tobytes()
    if regions:
        items = []
        for spec in regions:
            item = Dataset()
            for key, value in spec.items():
                setattr(item, key, value)
            items.append(item)
        ds.SequenceOfUltrasoundRegions = items
    for key, value in attrs.items():
        setattr(ds, key, value)
    if syntax == RLELossless:
        ds.compress(RLELossless, pixels if frames > 1 else pixels[0])
    ds.save_as(path, enforce_file_format=True)
    return ds


def luma(rgb):
    return np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)


def assert_same_in_training_and_runtime(path, frame=0):
    """Training's read_frame and the runtime's load_gray give the same pixels (runtime = training / 255)."""
    train = read_frame(path, frame)
    assert train.dtype == np.uint8
    runtime = load_gray(path)
    assert runtime.dtype == np.float32
    np.testing.assert_array_equal(runtime, train.astype(np.float32) / 255.0)
    return train


def test_monochrome2_8bit_passes_unchanged(tmp_path):
    pixels = RNG.integers(0, 256, (1, 24, 32), dtype=np.uint8)
    write_dicom(tmp_path / "a.dcm", pixels)
    np.testing.assert_array_equal(assert_same_in_training_and_runtime(tmp_path / "a.dcm"), pixels[0])


def test_monochrome1_is_inverted(tmp_path):
    pixels = RNG.integers(0, 256, (1, 24, 32), dtype=np.uint8)
    write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    np.testing.assert_array_equal(assert_same_in_training_and_runtime(tmp_path / "m1.dcm"), 255 - pixels[0])


def test_16_bit_without_window_is_min_max_scaled_in_both(tmp_path):
    """Old runtime refused 16-bit; old training min-max scaled: now both min-max scale the same way."""
    pixels = RNG.integers(1000, 5000, (1, 24, 32), dtype=np.uint16)
    write_dicom(tmp_path / "w.dcm", pixels)
    lo, hi = pixels.min(), pixels.max()
    expected = np.round((pixels[0] - float(lo)) / (float(hi) - lo) * 255).astype(np.uint8)
    np.testing.assert_array_equal(assert_same_in_training_and_runtime(tmp_path / "w.dcm"), expected)


def test_16_bit_with_window_uses_it(tmp_path):
    """LINEAR window centre 1000, width 500: <= 750 black, > 1249 white, 1000 -> 128 (PS3.3 C.11.2.1.2.1)."""
    values = np.array([0, 750, 1000, 1249, 1250, 4000, 800, 1200], dtype=np.uint16)
    pixels = np.tile(values, (8, 1)).reshape(1, 8, 8)
    write_dicom(tmp_path / "win.dcm", pixels, WindowCenter=1000, WindowWidth=500)
    got = assert_same_in_training_and_runtime(tmp_path / "win.dcm")
    np.testing.assert_array_equal(got[0], [0, 0, 128, 255, 255, 255, 26, 230])
    assert window(np.array([0.0, 10.0]), 5, 10, "LINEAR_EXACT").tolist() == [0, 255]
    with pytest.raises(ValueError, match="Window Width 0"):
        window(np.zeros(3), 5, 0)


def test_rescale_slope_applies_before_the_window(tmp_path):
    pixels = np.full((1, 8, 8), 100, dtype=np.uint16)  # 100 * 10 - 0 = 1000 -> window centre -> 128
    write_dicom(tmp_path / "r.dcm", pixels, RescaleSlope=10, RescaleIntercept=0, WindowCenter=1000,
                WindowWidth=500)
    assert (assert_same_in_training_and_runtime(tmp_path / "r.dcm") == 128).all()


def test_rgb_becomes_bt601_luma_without_stretching(tmp_path):
    """Old training min-max stretched colour DICOM (here 29..150 -> 0..255); runtime and training now agree."""
    rgb = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    rgb[0, :2] = (255, 0, 0)
    rgb[0, 2:4] = (0, 255, 0)
    rgb[0, 4:6] = (0, 0, 255)
    rgb[0, 6:] = (100, 100, 100)
    write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")
    got = assert_same_in_training_and_runtime(tmp_path / "rgb.dcm")
    assert got[:, 0].tolist() == [76, 76, 150, 150, 29, 29, 100, 100]


def test_ybr_full_is_converted_to_rgb_first(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = RNG.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb[0], "RGB", "YBR_FULL")[None]
    write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL")
    got = assert_same_in_training_and_runtime(tmp_path / "ybr.dcm")
    assert np.abs(got.astype(int) - luma(rgb[0])).max() <= 2  # two 8-bit colour conversions round twice


def test_jpeg_baseline_ybr_full_422_decodes_the_same_in_both(tmp_path):
    """The usual colour ultrasound file: JPEG baseline, YBR_FULL_422 (decoded through Pillow)."""
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 48)[None, :].astype(np.uint8)
    rgb[..., 1] = np.linspace(0, 255, 32)[:, None].astype(np.uint8)
    rgb[..., 2] = 90
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=1)  # 4:2:2
    write_dicom(tmp_path / "jpg.dcm", rgb[None], "YBR_FULL_422", syntax=JPEGBaseline8Bit,
                encapsulated=[buffer.getvalue()])
    got = assert_same_in_training_and_runtime(tmp_path / "jpg.dcm")
    assert np.abs(got.astype(int) - luma(rgb)).mean() < 2.0


def test_cine_frames_decode_one_by_one(tmp_path):
    frames = RNG.integers(0, 256, (3, 20, 24), dtype=np.uint8)
    write_dicom(tmp_path / "cine.dcm", frames, syntax=RLELossless)
    for index in range(3):
        np.testing.assert_array_equal(read_frame(tmp_path / "cine.dcm", index), frames[index])
    decoded = list(iter_frames(tmp_path / "cine.dcm"))
    assert [d.frame for d in decoded] == [0, 1, 2] and all(d.frames == 3 for d in decoded)
    np.testing.assert_array_equal(np.stack([d.pixels for d in decoded]), frames)
    with pytest.raises(InputError, match="cine loop of 3 frames"):
        load_gray(tmp_path / "cine.dcm")


def test_ultrasound_region_crops_and_gives_spacing_in_mm(tmp_path):
    """The largest 2D tissue region wins (not the colour-flow box, not a small 2D inset); cm -> mm; it also wins
    over Pixel Spacing."""
    pixels = RNG.integers(0, 256, (2, 60, 80), dtype=np.uint8)
    regions = [region(10, 5, 69, 54), region(0, 0, 79, 59, data_type=2), region(70, 50, 79, 59, dx=1, dy=1)]
    write_dicom(tmp_path / "us.dcm", pixels, regions=regions, PixelSpacing=[9, 9])
    for index in (0, 1):
        frame = decode_dicom(tmp_path / "us.dcm", index)
        np.testing.assert_array_equal(frame.pixels, pixels[index, 5:55, 10:70])
        np.testing.assert_array_equal(read_frame(tmp_path / "us.dcm", index), frame.pixels)
        assert frame.spacing_mm == pytest.approx((0.25, 0.2)) and frame.spacing_source == "ultrasound_region"
        assert frame.source_region == (10, 5, 69, 54) and frame.stored_shape == (60, 80)


def test_crop_overlays_trusts_a_dicom_tissue_region_and_crops_a_dicom_without_one(tmp_path):
    """--crop-overlays: a DICOM already cropped to its 2-D tissue region is not cropped again (a dark band inside
    the region would otherwise shrink it); one without a region gets the detected crop, as a PNG does."""
    from pocus_edge.data.overlay import crop_overlays, read_cropped

    pixels = np.zeros((1, 60, 80), np.uint8)
    pixels[0, 12:55, 20:60] = 90
    pixels[0, 12:55, 20:26] = 0  # dark at the region's left edge: the detector would cut it off
    pixels[0, 1:4, 64:78] = 255  # burned-in text outside the region
    write_dicom(tmp_path / "region.dcm", pixels, regions=[region(20, 12, 59, 54)])
    np.testing.assert_array_equal(read_cropped(tmp_path / "region.dcm"), pixels[0, 12:55, 20:60])
    write_dicom(tmp_path / "plain.dcm", pixels)
    cropped = read_cropped(tmp_path / "plain.dcm")
    np.testing.assert_array_equal(cropped, crop_overlays(pixels[0]))
    assert cropped.shape != pixels[0].shape and not (cropped == 255).any()


@pytest.mark.parametrize("attrs, regions, spacing, source", [
    ({"PixelSpacing": [0.3, 0.4]}, (), (0.3, 0.4), "pixel_spacing"),
    ({"ImagerPixelSpacing": [0.5, 0.5]}, (), (0.5, 0.5), "imager_pixel_spacing"),
    ({}, (), None, "none"),
    ({"PixelSpacing": [0.3, 0.4]}, [region(2, 2, 29, 19, units=4)], None, "none"),  # seconds: crop, no spacing
])
def test_spacing_fallbacks(tmp_path, attrs, regions, spacing, source):
    pixels = RNG.integers(0, 256, (1, 24, 32), dtype=np.uint8)
    write_dicom(tmp_path / "s.dcm", pixels, regions=regions, **attrs)
    frame = decode_dicom(tmp_path / "s.dcm")
    assert frame.spacing_source == source
    assert frame.spacing_mm == (pytest.approx(spacing) if spacing else None)
    assert frame.pixels.shape == ((18, 28) if regions else (24, 32))


def test_region_outside_the_frame_is_an_error(tmp_path):
    write_dicom(tmp_path / "bad.dcm", np.zeros((1, 24, 32), np.uint8), regions=[region(0, 0, 40, 10)])
    with pytest.raises(DicomError, match="does not fit the 32 x 24 frame"):
        decode_dicom(tmp_path / "bad.dcm")


def test_compressed_without_decoder_names_what_to_install(tmp_path):
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    write_dicom(tmp_path / "ll.dcm", np.zeros((1, 16, 16), np.uint8), syntax=JPEGLosslessSV1,
                encapsulated=[b"\xff\xd8\xff\xd9"])
    want = r"JPEG Lossless.*no installed decoder.*pip install 'pocus-edge\[dicom\]'.*'pylibjpeg-libjpeg>=2.1'"
    with pytest.raises(DicomError, match=want):
        read_frame(tmp_path / "ll.dcm")
    with pytest.raises(InputError, match=want):
        check_image_file(tmp_path / "ll.dcm")  # predict's up-front check, before any model runs


# --- pocus predict on DICOM, DICOM SEG ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(bundle_factory):
    return bundle_factory("onnx", "fp32")  # the session's shared ONNX bundle (other predict tests use it too)


def test_predict_dicom_writes_masks_and_a_seg_pointing_at_its_source(bundle, tmp_path):
    hd = pytest.importorskip("highdicom", reason="the dicom extra (highdicom) is not installed")
    from pocus_edge import __version__
    from pocus_edge.runtime import load

    pixels = RNG.integers(0, 256, (1, 60, 80), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    source = write_dicom(tmp_path / "in" / "scan.dcm", pixels, regions=[region(10, 5, 69, 54)])
    out = tmp_path / "out"
    proc = run_cli("predict", str(bundle), str(tmp_path / "in"), "--out", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 DICOM SEG(s) of 1 DICOM input(s)" in " ".join((proc.stdout + proc.stderr).split())
    report = json.loads((out / "results.json").read_text())
    record = report["results"][0]
    assert record["dicom"]["pixel_spacing_mm"] == pytest.approx([0.25, 0.2])
    assert record["dicom"]["ultrasound_region"] == [10, 5, 69, 54]
    mask = np.asarray(Image.open(out / record["mask"])) > 0
    assert mask.shape == (50, 60)  # the cropped image region, not the stored 60 x 80 frame
    predictor = load(bundle, threads=1)
    expected = predictor(pixels[0, 5:55, 10:70]).mask > 0
    np.testing.assert_array_equal(mask, expected)

    entry = report["dicom_seg"][0]
    assert entry["file"] == "scan_seg.dcm" and entry["source_sop_instance_uid"] == source.SOPInstanceUID
    seg = hd.seg.segread(out / "scan_seg.dcm")
    assert entry["sop_instance_uid"] == seg.SOPInstanceUID
    assert [uids[2] for uids in seg.get_source_image_uids()] == [source.SOPInstanceUID]
    assert seg.SegmentationType == "BINARY" and seg.StudyInstanceUID == source.StudyInstanceUID
    described = seg.SegmentSequence[0]
    assert described.SegmentLabel == "lesion" and "lesion" in described.SegmentDescription
    algorithm = described.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == predictor.manifest["name"] and algorithm.AlgorithmVersion == __version__
    assert predictor.digest in algorithm.AlgorithmParameters
    full = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])[0, ..., 0]
    assert full.shape == (60, 80) and not full[:5].any() and not full[:, :10].any()
    np.testing.assert_array_equal(full[5:55, 10:70] > 0, expected)


def test_predict_cine_masks_per_frame_and_says_why_no_seg(bundle, tmp_path):
    from pocus_edge.runtime.predict import run_predict

    frames = RNG.integers(0, 256, (3, 40, 48), dtype=np.uint8)
    write_dicom(tmp_path / "loop.dcm", frames, syntax=RLELossless)
    report = run_predict(bundle, [tmp_path / "loop.dcm"], None, tmp_path / "out", None, 1, 0.0)
    assert [r["source"] for r in report["results"]] == [f"{tmp_path / 'loop.dcm'}#{i}" for i in range(3)]
    assert [r["mask"] for r in report["results"]] == [f"loop_frames/{i:05d}_mask.png" for i in range(3)]
    assert all((tmp_path / "out" / r["overlay"]).is_file() for r in report["results"])
    assert report["dicom_seg"][0]["file"] is None and "highdicom issue #284" in report["dicom_seg"][0]["skipped"]
    assert not list((tmp_path / "out").glob("*.dcm"))
    off = run_predict(bundle, [tmp_path / "loop.dcm"], None, tmp_path / "off", None, 1, 0.0, dicom_seg=False)
    assert off["dicom_seg"] == []


def test_seg_without_highdicom_is_refused_before_anything_is_written(bundle, tmp_path, monkeypatch):
    from pocus_edge.runtime.predict import run_predict

    write_dicom(tmp_path / "one.dcm", RNG.integers(0, 256, (1, 20, 24), dtype=np.uint8))
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(PocusError, match=r"needs highdicom; pip install 'pocus-edge\[dicom\]', or pass --no-dicom"):
        run_predict(bundle, [tmp_path / "one.dcm"], None, tmp_path / "out", None, 1, 0.0)
    assert not (tmp_path / "out").exists()
    report = run_predict(bundle, [tmp_path / "one.dcm"], None, tmp_path / "out", None, 1, 0.0, dicom_seg=False)
    assert report["dicom_seg"] == [] and (tmp_path / "out" / "one_mask.png").is_file()


def test_predict_passes_the_dicom_spacing_so_measurements_are_in_mm(bundle, tmp_path, monkeypatch):
    """A bundle that measures gets the ultrasound region's spacing: area in mm² = pixels x 0.25 mm x 0.2 mm."""
    from pocus_edge.runtime import load
    from pocus_edge.runtime import predict as predict_module

    predictor = load(bundle, threads=1)
    predictor.manifest["measurements"] = ["area"]  # as pocus-export --measurements area would record it
    monkeypatch.setattr(predict_module, "load", lambda *a, **k: predictor)
    write_dicom(tmp_path / "us.dcm", RNG.integers(0, 256, (1, 60, 80), dtype=np.uint8),
                regions=[region(10, 5, 69, 54)])
    report = predict_module.run_predict(bundle, [tmp_path / "us.dcm"], None, tmp_path / "out", None, 1, 0.0,
                                        dicom_seg=False)
    measured = report["results"][0]["measurements"]
    assert measured["units"] == "mm" and measured["pixel_spacing_mm"] == pytest.approx([0.25, 0.2])
    assert measured["area"]["mm2"] == pytest.approx(measured["area"]["px"] * 0.05)
