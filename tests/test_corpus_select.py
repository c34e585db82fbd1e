"""pocus corpus scan/select and training on a selected frame list (issue 18 section 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TEACHER, pocus_here, run_cli, tiny_config_yaml
from PIL import Image, ImageDraw

from pocus_edge.data.corpus_embed import ProxySpec, TeacherSpec
from pocus_edge.data.corpus_scan import scan_report
from pocus_edge.data.corpus_select import (
    SelectSettings,
    dual_rank,
    parse_budget,
    proportional_quotas,
    quality_scores,
    select_frames,
)
from pocus_edge.data.frame_list import read_frame_list
from pocus_edge.data.overlay import crop_overlays, ultrasound_region
from pocus_edge.data.phash import hamming, near_duplicates, phash
from pocus_edge.errors import ConfigError, DataError

BASES, REPEATS = 8, 4


def _base(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random pattern: distinct seeds give far-apart perceptual hashes."""
    grid = np.random.default_rng(seed).integers(0, 256, (6, 6)).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def _noisy(img: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(1000 + seed).normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cine_dir(tmp_path_factory) -> Path:
    """BASES cine loops of REPEATS noisy frames each (frame 0 clean), plus one exact copy of a frame."""
    root = tmp_path_factory.mktemp("cine")
    for b in range(BASES):
        clean = _base(b)
        for r in range(REPEATS):
            Image.fromarray(clean if r == 0 else _noisy(clean, b * 10 + r)).save(root / f"loop{b}_f{r}.png")
    Image.fromarray(_base(0)).save(root / "zz_copy.png")
    return root


def test_phash_separates_noise_from_content():
    a = _base(1)
    assert hamming(phash(a), phash(a)) == 0
    assert hamming(phash(a), phash(_noisy(a, 1))) <= 6
    assert min(hamming(phash(_base(i)), phash(_base(j))) for i in range(6) for j in range(i + 1, 6)) > 12


@pytest.mark.parametrize("threshold", [0, 3, 10])
def test_near_duplicate_index_matches_brute_force(threshold):
    """The multi-index search gives exactly the greedy brute-force answer (pigeonhole: no pair is missed)."""
    rng = np.random.default_rng(threshold)
    hashes = []
    for _ in range(300):
        if hashes and rng.random() < 0.6:  # a near copy of an earlier hash, some bits flipped
            h = hashes[int(rng.integers(len(hashes)))]
            for bit in rng.choice(64, size=int(rng.integers(0, 14)), replace=False):
                h ^= 1 << int(bit)
        else:
            h = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(2))
        hashes.append(h)
    kept: list[int] = []
    expected = []
    for i, h in enumerate(hashes):
        close = [(hamming(h, hashes[k]), k) for k in kept if hamming(h, hashes[k]) <= threshold]
        if close:
            bits, k = min(close)
            expected.append((k, bits))
        else:
            kept.append(i)
            expected.append(None)
    assert near_duplicates(hashes, threshold) == expected


def test_scan_reports_exact_and_near_duplicates_of_a_cine_loop(cine_dir, tmp_path):
    out = tmp_path / "corpus.json"
    code = run_cli("corpus", "scan", "--data", str(cine_dir), "--out", str(out), "--quiet")
    assert code.returncode == 0, code.stderr
    report = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    summary = report["summary"]
    assert summary["frames"] == BASES * REPEATS  # the copy is an exact duplicate, removed as distill removes it
    assert summary["exact_duplicates_removed"] == 1
    assert report["exact_duplicates"][0]["ref"].endswith("zz_copy.png")
    assert summary["unique_frames"] == BASES and summary["near_duplicates"] == BASES * (REPEATS - 1)
    by_ref = {Path(f["ref"]).name: f for f in report["frames"]}
    for b in range(BASES):
        for r in range(1, REPEATS):
            assert Path(by_ref[f"loop{b}_f{r}.png"]["near_duplicate_of"]).name == f"loop{b}_f0.png"
    frame = by_ref["loop3_f0.png"]
    assert frame["near_duplicate_of"] is None and len(frame["pixel_sha256"]) == 64 and len(frame["file_sha256"]) == 64
    assert (frame["height"], frame["width"]) == (64, 64) and frame["file_bytes"] > 0
    assert summary["per_folder"][str(cine_dir)]["unique_frames"] == BASES
    no_near = scan_report([cine_dir], near_threshold=-1)
    assert no_near["summary"]["near_duplicates"] == 0


def _fan_with_text() -> tuple[np.ndarray, np.ndarray]:
    """A 160x200 frame: a speckled fan (sector) on black, burned-in text (top left and inside the fan's bounding
    box), ruler ticks at the right edge. Returns the frame and the fan's mask."""
    h, w = 160, 200
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - 20, xx - 100)
    angle = np.degrees(np.arctan2(xx - 100, yy - 20))
    fan = (r > 10) & (r < 130) & (np.abs(angle) < 40)
    speckle = np.random.default_rng(0).gamma(2.0, 40.0, (h, w))
    pil = Image.fromarray(np.where(fan, np.clip(40 + speckle, 0, 200), 0).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    draw.text((2, 2), "PHILIPS 5.0MHz", fill=255)
    draw.text((20, 40), "5.0MHz", fill=255)  # inside the fan's bounding box, outside the fan
    for y in range(10, 150, 10):  # ruler ticks
        draw.line([(192, y), (197, y)], fill=255)
    return np.asarray(pil), fan


def test_crop_overlays_keeps_the_fan_and_drops_text_and_ruler():
    img, fan = _fan_with_text()
    overlay = (img > 0) & ~fan
    rows, cols = np.flatnonzero(fan.any(1)), np.flatnonzero(fan.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert overlay[:12].any() and overlay[:, 190:].any() and overlay[y0:y1, x0:x1].sum() > 20  # text is there
    (by0, by1, bx0, bx1), _ = ultrasound_region(img)
    assert max(abs(by0 - y0), abs(by1 - y1), abs(bx0 - x0), abs(bx1 - x1)) <= 2  # the box is the fan's
    cropped = crop_overlays(img)
    assert cropped.shape == (by1 - by0, bx1 - bx0)
    assert not cropped[overlay[by0:by1, bx0:bx1]].any()  # no text pixel survives, not even inside the box
    inside = fan[by0:by1, bx0:bx1]
    assert np.mean(cropped[inside] == img[by0:by1, bx0:bx1][inside]) > 0.98  # the fan's pixels pass unchanged
    plain = _base(3)  # no dark border: nothing to crop
    assert crop_overlays(plain) is plain


def test_crop_overlays_reaches_the_distill_data_path(tmp_path):
    """distill --crop-overlays: the frames the training and held-out datasets load are the cropped fan."""
    from pocus_edge.data.corpus import scan_corpus
    from pocus_edge.data.dataset import AugmentedFrames, load_frame
    from pocus_edge.distill.setup import RESUME_FIELDS

    img, fan = _fan_with_text()
    Image.fromarray(img).save(tmp_path / "scanner.png")
    (ref,) = scan_corpus([tmp_path], crop_overlays=True).frames
    loaded = load_frame(ref)
    assert tuple(loaded.shape[1:]) == crop_overlays(img).shape and round(float(loaded.max()) * 255) <= 200
    assert tuple(load_frame(scan_corpus([tmp_path]).frames[0]).shape[1:]) == img.shape  # off: the whole frame
    assert AugmentedFrames([ref], 64, "ultrasound")[(0, 1)].shape == (3, 64, 64)
    assert "crop_overlays" in RESUME_FIELDS  # a resume cannot switch the crop on or off


def test_budget_and_quotas_by_hand():
    assert parse_budget("25%", 40) == 10 and parse_budget("7", 40) == 7 and parse_budget("0.1%", 40) == 1
    for bad in ("0", "-3", "0%", "150%", "ten", "nan%"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad, 40)
    assert proportional_quotas([10, 6, 4], 10) == [5, 3, 2]
    assert proportional_quotas([5, 5, 5], 4) == [2, 1, 1]  # equal remainders: the lower cluster index first
    assert sum(proportional_quotas([7, 3, 11, 1], 9)) == 9


def test_dual_rank_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1])
    distances = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.1])
    quality = np.array([1.0, 4.0, 3.0, 2.0, 1.0, 2.0])
    # cluster 0: distance ranks 0,1,2,3 + quality ranks 3,0,1,2 -> sums 3,1,3,5: frame 1 first, then 0 vs 2 tie
    # broken by the better quality rank (frame 2); cluster 1 gets 1 (quotas 2.67 -> 3, 1.33 -> 1): frame 5 (sum 0)
    assert dual_rank(labels, distances, quality, 4).tolist() == [0, 1, 2, 5]
    # far first: cluster 0 sums 6,2,2,2 -> frames 1,2,3 by quality rank; cluster 1 ties 1,1 -> frame 5 (quality)
    assert dual_rank(labels, distances, quality, 4, "far").tolist() == [1, 2, 3, 5]
    high_stable, middling, oscillating, low_flat = [2, 2, 2], [1, 1.2, 1], [0.5, 3, 0.5], [0.1, 0.1, 0.1]
    scores = quality_scores(np.array([high_stable, middling, oscillating, low_flat], dtype=float))
    assert scores[0] > scores[1] > scores[2] > scores[3]  # TinyUSFM's order: high stable first, low and flat last


def _settings(cine_dir: Path, out: Path, method: str = "dual-rank", **kw) -> SelectSettings:
    teacher = TeacherSpec("vit_small_patch16_dinov3", "random", TINY_TEACHER, (), "concat", True, 64, kw.pop("seed", 0))
    return SelectSettings(data=[str(cine_dir)], out=str(out), budget=kw.pop("budget", "50%"), method=method,
                          teacher=teacher, proxy=ProxySpec(student="resnet10t", epochs=2, batch_size=8),
                          seed=teacher.seed, batch_size=8, **kw)


def test_random_select_is_seeded_and_respects_the_budget(cine_dir, tmp_path):
    lists = []
    for seed in (0, 0, 1):
        out = tmp_path / f"random{len(lists)}.txt"
        summary = select_frames(_settings(cine_dir, out, "random", seed=seed, budget="5"))
        assert summary["selected"] == 5 and summary["pool"] == BASES
        lists.append([e for _, e in read_frame_list(out)])
    assert lists[0] == lists[1] and lists[0] != lists[2]
    assert all(Path(e).is_absolute() and "_f0" in e for e in lists[0])  # near duplicates were removed first
    with pytest.raises(DataError, match="near-duplicate removal"):
        select_frames(_settings(cine_dir, tmp_path / "x.txt", "random", budget="50%"))  # 16 > 8 unique


def test_dual_rank_is_deterministic_cached_and_proportional(cine_dir, tmp_path, monkeypatch):
    out = tmp_path / "sel.txt"
    first = select_frames(_settings(cine_dir, out, budget="5", near_threshold=-1, clusters=3))
    listed = out.read_text()
    assert first["selected"] == 5 and len(read_frame_list(out)) == 5 and first["pool"] == BASES * REPEATS
    for c in first["clusters"]:  # every cluster gets floor or ceil of its share of the budget
        share = 5 * c["size"] / first["pool"]
        assert math.floor(share) <= c["selected"] <= math.ceil(share)
    assert sum(c["selected"] for c in first["clusters"]) == 5
    assert any(Path(first["cache"]).glob("embeddings-*.npy")) and any(Path(first["cache"]).glob("proxy-*.npy"))

    def no_teacher(*args, **kwargs):
        raise AssertionError("the cached embeddings should have been reused")

    monkeypatch.setattr("pocus_edge.models.teacher.build_teacher", no_teacher)
    monkeypatch.setattr("pocus_edge.models.student.build_student", no_teacher)  # nor the proxy run's norms
    again = select_frames(_settings(cine_dir, out, budget="5", near_threshold=-1, clusters=3))
    assert out.read_text() == listed and again["clusters"] == first["clusters"]
    monkeypatch.undo()
    fresh = tmp_path / "fresh" / "sel.txt"  # another folder: no cache, everything recomputed
    select_frames(_settings(cine_dir, fresh, budget="5", near_threshold=-1, clusters=3))
    assert fresh.read_text() == listed


def test_dual_rank_lists_differ_by_seed(cine_dir, tmp_path):
    a = select_frames(_settings(cine_dir, tmp_path / "a.txt", budget="6", seed=0))
    b = select_frames(_settings(cine_dir, tmp_path / "b.txt", budget="6", seed=3))
    assert a["selected"] == b["selected"] == 6
    frames = [[line for line in (tmp_path / f"{n}.txt").read_text().splitlines() if not line.startswith("#")]
              for n in "ab"]
    assert frames[0] != frames[1]  # the seed reaches k-means and the proxy run (a random teacher too)


def test_kcenter_is_deterministic_and_respects_the_budget(cine_dir, tmp_path):
    a = select_frames(_settings(cine_dir, tmp_path / "a.txt", "kcenter", budget="6"))
    b = select_frames(_settings(cine_dir, tmp_path / "b.txt", "kcenter", budget="6"))
    assert a["selected"] == b["selected"] == 6
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()


def test_a_selected_list_drives_distill_and_another_list_cannot_resume(cine_dir, tmp_path):
    from pocus_edge.distill.config import load_config
    from pocus_edge.distill.trainer import run_distillation

    out = tmp_path / "sel.txt"
    select_frames(_settings(cine_dir, out, "random", budget="16", near_threshold=-1))
    run = tmp_path / "run"
    yaml_path = tiny_config_yaml(tmp_path / "c.yaml", cine_dir, data_list=str(out), max_steps=2, save_every="2",
                                 held_out_fraction=0.0, batch_size=4)
    summary = run_distillation(load_config(yaml_path, {"out": str(run)}))
    assert summary["train_images"] == 16 and summary["unlisted_frames_dropped"] == BASES * REPEATS - 16
    assert len(summary["data_list_sha256"]) == 64
    other = tmp_path / "other.txt"
    select_frames(_settings(cine_dir, other, "random", budget="16", near_threshold=-1, seed=5))
    resumed = run_distillation(load_config(yaml_path, {"out": str(run), "resume": True}))  # same list: resumes
    assert resumed["steps"] == 2 and resumed["steps_this_session"] == 0
    out.write_text(other.read_text())  # same path, other frames: the fingerprint catches it
    with pytest.raises(ConfigError, match="frame list changed"):
        run_distillation(load_config(yaml_path, {"out": str(run), "resume": True}))


def test_select_device_is_checked_before_the_scan(tmp_path):
    import torch

    from pocus_edge.data.corpus_embed import select_device

    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no such CUDA GPU is visible here"):
            select_frames(_settings(tmp_path / "nowhere", tmp_path / "l.txt", "kcenter", device="cuda:0"))


def test_a_list_trains_with_the_crop_setting_it_was_selected_with(cine_dir, tmp_path):
    from pocus_edge.distill.config import load_config
    from pocus_edge.distill.ddp import init_distributed
    from pocus_edge.distill.setup import prepare_data

    out = tmp_path / "sel.txt"
    select_frames(_settings(cine_dir, out, "random", budget="8", near_threshold=-1))
    assert "# crop_overlays: false" in out.read_text().splitlines()
    yaml_path = tiny_config_yaml(tmp_path / "c.yaml", cine_dir, data_list=str(out), held_out_fraction=0.0,
                                 batch_size=4)
    assert len(prepare_data(load_config(yaml_path, {"out": str(tmp_path / "r")}), init_distributed()).train) == 8
    cropping = load_config(yaml_path, {"out": str(tmp_path / "r"), "crop_overlays": True})
    with pytest.raises(DataError, match="selected on uncropped frames, but this run crops them"):
        prepare_data(cropping, init_distributed())
    out.write_text(out.read_text().replace("# crop_overlays: false", "# crop_overlays: true"))
    with pytest.raises(DataError, match="selected on frames cropped to the ultrasound region"):
        prepare_data(load_config(yaml_path, {"out": str(tmp_path / "r")}), init_distributed())


def test_unknown_list_entry_is_a_clear_cli_error(cine_dir, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{cine_dir / 'loop0_f0.png'}\n{cine_dir / 'nope.png'}\n")
    yaml_path = tiny_config_yaml(tmp_path / "c.yaml", cine_dir)
    code, out, err = pocus_here(["distill", "--config", yaml_path, "--out", tmp_path / "run", "--data-list", bad],
                                capsys)
    assert code == 2
    assert "error: frame list" in out + err and "line 2" in out + err
    assert "nope.png" in out + err and not (tmp_path / "run" / "checkpoints").exists()


def test_select_can_leave_out_the_downstream_eval_images(tmp_path, capsys):
    """`corpus select --exclude-eval-splits DIR`: the budget goes to frames distill/kd may train on; a folder
    without labelled splits is refused instead of leaving nothing out."""
    from pocus_edge.data.corpus import pixel_digest
    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.data.readers import read_frame
    from pocus_edge.finetune.data import eval_split_digests

    labeled = write_phantom_dataset(tmp_path / "labeled", 30, size=(64, 64), seed=5)
    held = eval_split_digests(labeled, ("segmentation", "classification"), 0)
    out = tmp_path / "list.txt"
    code, stdout, _ = pocus_here(["corpus", "select", "--data", str(labeled), "--budget", "100%", "--method",
                                  "random", "--near-threshold", "-1", "--exclude-eval-splits", str(labeled),
                                  "--out", str(out), "--json", "-"], capsys)
    assert code == 0, stdout
    listed = [e for _, e in read_frame_list(out)]
    assert len(listed) == 30 - len(held) and len(held) > 0
    assert not {pixel_digest(read_frame(Path(e))) for e in listed} & held
    assert json.loads(stdout)["eval_images_left_out"] == len(held), stdout
    assert f"eval images left out: {len(held)}" in out.read_text()
    code, _, err = pocus_here(["corpus", "select", "--data", str(labeled), "--budget", "5", "--method", "random",
                               "--exclude-eval-splits", str(tmp_path / "typo"), "--out", str(tmp_path / "x.txt")],
                              capsys)
    assert code == 2 and "no labelled splits to leave out" in err and not (tmp_path / "x.txt").exists()
