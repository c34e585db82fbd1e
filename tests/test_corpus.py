import shutil

import numpy as np
import pytest
from PIL import Image

from pocus_edge.data.corpus import scan_corpus, split_by_group
from pocus_edge.errors import DataError
from pocus_edge.runtime.images import InputError


def _png(path, seed, size=(40, 50), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    if mode == "RGB":
        pixels = np.stack([pixels] * 3, axis=-1)
    Image.fromarray(pixels).save(path)


def test_duplicates_unreadable_and_masks_are_handled(tmp_path):
    _png(tmp_path / "a" / "one.png", 1)
    _png(tmp_path / "a" / "deep" / "two.jpg", 2)
    _png(tmp_path / "a" / "three.bmp", 3, mode="RGB")
    shutil.copy(tmp_path / "a" / "one.png", tmp_path / "a" / "copy_of_one.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    _png(tmp_path / "a" / "masks" / "one.png", 4)
    _png(tmp_path / "a" / "one_mask.png", 5)
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    corpus = scan_corpus([tmp_path / "a"])
    names = sorted(p.path.split("/")[-1] for p in corpus.frames)
    assert names == ["copy_of_one.png", "three.bmp", "two.jpg"]  # files are read in sorted order: the first copy wins
    assert corpus.duplicates[0][0].endswith("/one.png") and corpus.duplicates[0][1].endswith("/copy_of_one.png")
    assert len(corpus.duplicates) == 1
    assert [s[0].split("/")[-1] for s in corpus.skipped] == ["broken.png"]
    corpus.write_skipped(tmp_path / "skipped.txt")
    text = (tmp_path / "skipped.txt").read_text()
    assert "broken.png" in text and "duplicate of" in text


def test_sixteen_bit_images_are_refused_as_the_runtime_refuses_them(tmp_path):
    from pocus_edge.data.readers import read_frame

    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(arr).save(tmp_path / "x16.png")
    with pytest.raises(InputError, match=r"16-bit image \(mode I;16\); window it to 8 bits"):
        read_frame(tmp_path / "x16.png")


def test_empty_and_all_bad_corpora_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable images found"):
        scan_corpus([tmp_path / "empty"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="1 file\\(s\\) could not be read"):
        scan_corpus([tmp_path / "bad"])
    with pytest.raises(DataError, match="no such file or folder"):
        scan_corpus([tmp_path / "missing"])


def test_manifest_groups_keep_cases_on_one_side_of_the_split(tmp_path):
    root = tmp_path / "hc"
    rows = ["file,case_id"]
    for case in range(30):
        for frame in range(3):
            _png(root / "images" / f"c{case}_{frame}.png", case * 10 + frame)
            rows.append(f"images/c{case}_{frame}.png,{case:03d}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    corpus = scan_corpus([root])
    assert len(corpus.frames) == 90
    train, held = split_by_group(corpus.frames, 0.2, seed=0)
    assert held and train
    assert not {f.group for f in train} & {f.group for f in held}
    assert split_by_group(corpus.frames, 0.2, seed=0) == (train, held)


def test_dicom_frames_are_read(tmp_path):
    pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pydicom) is not installed")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # ultrasound multi-frame
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "clip.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 40), dtype=np.uint8)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 32, 40, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "clip.dcm", enforce_file_format=True)
    corpus = scan_corpus([tmp_path])
    assert [f.frame for f in corpus.frames] == [0, 1, 2]
    from pocus_edge.data.readers import read_frame

    assert np.array_equal(read_frame(tmp_path / "clip.dcm", 1), frames[1])
    assert pydicom is not None


def test_video_frames_are_sampled(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="the video extra (opencv-python-headless) is not installed")
    path = tmp_path / "loop.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(20):
        writer.write(np.full((32, 48, 3), i * 12, dtype=np.uint8))
    writer.release()
    corpus = scan_corpus([tmp_path], max_video_frames=5)
    assert len(corpus.frames) == 5
    assert corpus.frames[0].frame == 0 and corpus.frames[-1].frame == 19
    assert len({f.group for f in corpus.frames}) == 1  # one clip = one split group
