"""Measurements in mm (issue 17 section 2): the ellipse fit and area on synthetic masks of known size, the manifest
field, the predictor's per-call spacing, `pocus predict --pixel-spacing` and `pocus eval --measure ellipse`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pocus_edge.errors import ConfigError, DataError
from pocus_edge.runtime.measure import (
    MEASUREMENTS,
    label_runs,
    measure_mask,
    parse_measurements,
    parse_spacing,
    ramanujan_circumference,
)


def ellipse_mask(shape, center, semi_axes, angle_deg, spacing=(1.0, 1.0), supersample=8):
    """An ellipse given in mm (centre (row, col) from the top-left pixel's corner), rasterised at `spacing` as
    HC18's masks were: area coverage by supersampling, thresholded at 50 %."""
    h, w = shape
    ys = (np.arange(h * supersample) + 0.5) / supersample * spacing[0]
    xs = (np.arange(w * supersample) + 0.5) / supersample * spacing[1]
    y, x = np.meshgrid(ys - center[0], xs - center[1], indexing="ij")
    t = math.radians(angle_deg)
    u, v = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    inside = (u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2 <= 1
    return inside.reshape(h, supersample, w, supersample).mean(axis=(1, 3)) >= 0.5


@pytest.mark.parametrize("semi_axes,angle", [((70.0, 52.0), 30.0), ((38.0, 25.0), 118.0), ((80.0, 60.0), 0.0)])
def test_known_ellipse_at_hc18_resolution_within_half_a_percent(semi_axes, angle):
    """256 x 173 px at 0.2 mm: the size HC18 masks have; circumference within 0.5 %, axes, centre and angle."""
    spacing = (0.2, 0.2)
    center_mm = (86.5 * 0.2, 128 * 0.2)
    axes_mm = (semi_axes[0] * 0.2, semi_axes[1] * 0.2)
    result = measure_mask(ellipse_mask((173, 256), center_mm, axes_mm, angle, spacing), spacing)
    fit = result["ellipse"]["mm"]
    assert result["status"] == "ok" and result["ellipse"]["method"] == "direct_least_squares_boundary"
    truth = ramanujan_circumference(*axes_mm)
    assert abs(fit["circumference"] / truth - 1) < 0.005
    assert fit["semi_major"] == pytest.approx(axes_mm[0], rel=0.005)
    assert fit["semi_minor"] == pytest.approx(axes_mm[1], rel=0.005)
    assert abs((fit["angle_deg"] - angle + 90) % 180 - 90) < 1.0
    # centres: from the centre of the top-left pixel (index x spacing)
    assert fit["center"] == pytest.approx([center_mm[0] - 0.1, center_mm[1] - 0.1], abs=0.02)
    assert result["ellipse"]["px"]["circumference"] == pytest.approx(fit["circumference"] / 0.2, rel=1e-9)
    assert result["area"]["mm2"] == pytest.approx(math.pi * axes_mm[0] * axes_mm[1], rel=0.005)


def test_anisotropic_spacing_is_fitted_in_mm():
    """Rows 0.3 mm, columns 0.2 mm: the mm ellipse is the true one; an isotropic spacing would be 10 %+ off."""
    spacing, axes, angle = (0.3, 0.2), (12.0, 8.0), 35.0
    mask = ellipse_mask((120, 180), (18.0, 18.0), axes, angle, spacing)
    result = measure_mask(mask, spacing)
    fit = result["ellipse"]["mm"]
    assert fit["circumference"] == pytest.approx(ramanujan_circumference(*axes), rel=0.005)
    assert (fit["semi_major"], fit["semi_minor"]) == pytest.approx(axes, rel=0.01)
    assert abs(fit["angle_deg"] - angle) < 1.0
    assert result["area"]["mm2"] == pytest.approx(mask.sum() * 0.06)
    assert result["pixel_spacing_mm"] == [0.3, 0.2] and result["units"] == "mm"
    wrong = measure_mask(mask, (0.2, 0.2))["ellipse"]["mm"]["circumference"]
    assert abs(wrong / fit["circumference"] - 1) > 0.1
    assert measure_mask(mask, "0.3,0.2") == result  # text and tuple spellings agree


def test_single_number_spacing_and_pixels_only():
    mask = ellipse_mask((60, 60), (30, 30), (20, 12), 10)
    px = measure_mask(mask, None)
    assert px["units"] == "px" and px["pixel_spacing_mm"] is None
    assert px["area"] == {"px": int(mask.sum()), "mm2": None} and px["ellipse"]["mm"] is None
    mm = measure_mask(mask, 0.5)
    assert mm["ellipse"]["mm"]["circumference"] == pytest.approx(px["ellipse"]["px"]["circumference"] * 0.5)


@pytest.mark.parametrize("spacing", [None, (0.2, 0.25)])
def test_empty_mask_is_no_structure_with_nulls_never_nan(spacing):
    result = measure_mask(np.zeros((30, 40), np.uint8), spacing)
    assert result["status"] == "no_structure" and "no structure" in result["reason"]
    assert result["ellipse"] is None and result["area"]["px"] == 0
    json.dumps(result, allow_nan=False)  # raises on NaN/inf


def test_only_the_requested_measurements():
    mask = ellipse_mask((40, 40), (20, 20), (10, 8), 0)
    assert "ellipse" not in measure_mask(mask, 0.1, ["area"]) and "area" not in measure_mask(mask, 0.1, ["ellipse"])


def test_head_cut_by_the_image_border_is_fitted_to_its_visible_arc():
    """The fit leaves out edges on the image border; moments of the cut region would be ~3 % short."""
    axes = (80.0, 60.0)
    mask = ellipse_mask((173, 256), (46.5, 128.0), axes, 12.0)  # the top 20 px of the head lie above the image
    result = measure_mask(mask, None)["ellipse"]
    assert result["touches_border"] is True
    assert result["px"]["circumference"] == pytest.approx(ramanujan_circumference(*axes), rel=0.005)


def test_largest_component_with_holes_filled():
    """A speckle blob elsewhere and holes inside do not change the fit; the area still counts every pixel."""
    clean = ellipse_mask((120, 160), (60, 70), (40, 30), 20)
    noisy = clean.copy()
    noisy[60:64, 60:66] = False  # holes
    noisy[70, 80] = False
    noisy[5:9, 150:155] = True  # a second component
    a, b = measure_mask(clean, 0.3), measure_mask(noisy, 0.3)
    assert b["ellipse"]["components"] == 2 and b["ellipse"]["filled_px"] == a["ellipse"]["filled_px"]
    assert b["ellipse"]["mm"] == a["ellipse"]["mm"]
    assert b["area"]["px"] == int(noisy.sum())


@pytest.mark.parametrize("mask", [np.ones((1, 1)), np.ones((3, 3)), np.eye(5), np.pad(np.eye(5), 2), np.ones((2, 9))],
                         ids=["pixel", "block-on-border", "diagonal-on-border", "diagonal-inside", "bar"])
def test_degenerate_masks_fall_back_to_moments_and_stay_finite(mask):
    """A diagonal line's edges fit a needle thousands of pixels long: refused, moments used, the note says why."""
    result = measure_mask(mask, 0.2)
    assert result["ellipse"]["method"] == "region_moments" and result["ellipse"]["note"]
    assert result["ellipse"]["mm"]["semi_major"] < 2
    assert all(math.isfinite(v) for v in result["ellipse"]["mm"]["center"] + [result["ellipse"]["mm"]["semi_major"]])
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("density", [0.05, 0.3, 0.6, 0.95])
def test_speckle_masks_give_finite_json_safe_fits(density):
    mask = np.random.default_rng(int(density * 100)).random((90, 120)) < density
    result = measure_mask(mask, (0.2, 0.3))
    fit = result["ellipse"]["mm"]
    assert 0 < fit["semi_minor"] <= fit["semi_major"] < math.hypot(90 * 0.2, 120 * 0.3)
    json.dumps(result, allow_nan=False)


def test_run_labelling_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    for density in (0.2, 0.45, 0.6):
        mask = rng.random((37, 53)) < density
        for eight, structure in ((True, np.ones((3, 3))), (False, None)):
            _, _, _, labels = label_runs(mask, eight)
            assert (labels.max() + 1 if len(labels) else 0) == ndimage.label(mask, structure)[1]


@pytest.mark.parametrize("value,expected", [(0.2, (0.2, 0.2)), ("0.3,0.2", (0.3, 0.2)), ((0.1, 0.4), (0.1, 0.4)),
                                            (" 0.5 ", (0.5, 0.5)), (None, None)])
def test_spacing_spellings(value, expected):
    assert parse_spacing(value) == expected


def test_measurement_names():  # refusals: tests/adversarial/test_measure_inputs.py
    assert parse_measurements("ellipse, AREA") == ["area", "ellipse"] and parse_measurements("none") == []


def test_export_table_offers_every_canonical_combination():
    """--measurements is a table option on every target; its values are the canonical spellings."""
    from itertools import combinations

    from pocus_edge.export.targets import TARGETS

    combos = {"none"} | {",".join(c) for n in (1, 2) for c in combinations(MEASUREMENTS, n)}
    for target in TARGETS.values():
        option = target.options["measurements"]
        assert set(option.values) == combos and option.precisions == target.precisions


def test_export_defaults_and_refusals():
    from pocus_edge.export.api import _measurement_option, _measurements_for

    assert _measurements_for("segmentation", None) == ["area"]
    assert _measurements_for("classification", None) == [] and _measurements_for("embedding", "none") == []
    assert _measurements_for("segmentation", _measurement_option(["ellipse", "area"])) == ["area", "ellipse"]
    assert _measurement_option("") == "none"
    with pytest.raises(ConfigError, match="--measurements ellipse: a classification model has no mask"):
        _measurements_for("classification", "ellipse")


def test_schema_takes_the_field_and_refuses_unknown_names(bundle_factory):
    from pocus_edge.runtime.manifest import BundleError, read_manifest, validate_manifest

    manifest = read_manifest(bundle_factory("onnx", "fp32"))
    assert manifest["measurements"] == ["area"]  # segmentation default
    validate_manifest({**manifest, "measurements": ["area", "ellipse"]})
    older = {k: v for k, v in manifest.items() if k != "measurements"}
    validate_manifest(older)  # bundles exported before the field still load
    with pytest.raises(BundleError, match="measurements/0"):
        validate_manifest({**manifest, "measurements": ["volume"]})


def test_predictor_measures_what_the_manifest_lists_in_mm(bundle_factory):
    import pocus_edge.runtime as rt

    predictor = rt.load(bundle_factory("onnx", "fp32"))
    image = np.random.default_rng(0).random((50, 70))
    result = predictor(image, pixel_spacing_mm=(0.2, 0.3))
    m = result.measurements
    assert set(m) == {"status", "reason", "pixel_spacing_mm", "units", "area"}  # no ellipse: not listed
    assert m["area"]["px"] == int(result.mask.sum()) and m["area"]["mm2"] == pytest.approx(m["area"]["px"] * 0.06)
    assert result.to_json()["measurements"] == m
    assert predictor(image).measurements["units"] == "px"
    with pytest.raises(ConfigError, match="pixel_spacing_mm"):
        predictor(image, pixel_spacing_mm=-1)


class _Disk:
    """A backend whose logits are a disk of radius 12 px at the 64 px model grid (positive inside)."""

    name = "fake"

    def run(self, x):
        yy, xx = np.mgrid[:64, :64] + 0.5
        logits = 8.0 * (12 - np.hypot(yy - 32, xx - 32))
        return np.repeat(logits[None, None].astype(np.float32), x.shape[0], axis=0)


def _manifest(task="segmentation", measurements=("area", "ellipse"), labels=("background", "head")):
    manifest = {"name": "fake", "task": task, "target": "onnx", "precision": "fp32", "labels": list(labels),
                "inputs": [{"dtype": "float32", "layout": "NCHW", "quantization": None}],
                "outputs": [{"layout": "NCHW", "quantization": None}],
                "preprocessing": {"image_size": [64, 64], "raw_input": False, "scale": 1 / 255,
                                  "mean": [0.5] * 3, "std": [0.25] * 3},
                "postprocessing": {"activation": "sigmoid", "threshold": 0.5, "mask_resize": "bilinear_probabilities"}}
    if measurements is not None:
        manifest["measurements"] = list(measurements)
    return manifest


def test_measurements_are_taken_at_the_original_size():
    """A disk of radius 12/64 of the frame, on a 256 x 128 image: an ellipse of semi-axes 48 x 24 px."""
    from pocus_edge.runtime.predictor import Predictor

    result = Predictor(Path("."), _manifest(), _Disk())(np.zeros((128, 256)), pixel_spacing_mm=0.1)
    fit = result.measurements["ellipse"]
    assert result.mask.shape == (128, 256)
    assert (fit["px"]["semi_major"], fit["px"]["semi_minor"]) == pytest.approx((48, 24), rel=0.03)
    assert fit["mm"]["circumference"] == pytest.approx(ramanujan_circumference(4.8, 2.4), rel=0.03)
    result.mask[:] = 0  # e.g. cine smoothing replaced the mask: never a stale measurement
    assert result.measurements["status"] == "no_structure"


@pytest.mark.parametrize("manifest,match", [
    (_manifest(measurements=None), "lists no measurements.*--measurements area,ellipse"),
    (_manifest(measurements=()), "lists no measurements"),
    (_manifest(task="classification", labels=("a", "b")), "classification model; measurements apply to "
                                                          "segmentation bundles only"),
])
def test_spacing_for_a_bundle_that_cannot_use_it_is_refused(manifest, match):
    from pocus_edge.runtime.predictor import Predictor

    predictor = Predictor(Path("bundle"), manifest, _Disk())
    with pytest.raises(ConfigError, match=match):
        predictor(np.zeros((64, 64)), pixel_spacing_mm=0.2)
    if manifest["task"] == "segmentation":
        assert predictor(np.zeros((64, 64))).measurements is None  # nothing listed, nothing computed
        assert predictor(np.zeros((64, 64))).to_json()["measurements"] is None


def test_multi_class_measures_each_foreground_label():
    from pocus_edge.runtime.results import SegmentationResult

    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 5:15], mask[20:35, 20:30] = 1, 2
    result = SegmentationResult(mask, np.zeros((3, 40, 40)), ["bg", "a", "b"], pixel_spacing_mm=(1.0, 1.0),
                                measure=("area",))
    assert {k: v["area"]["mm2"] for k, v in result.measurements["per_label"].items()} == {"a": 100.0, "b": 150.0}


def test_predict_cli_pixel_spacing(bundle_factory, tmp_path, capsys):
    from pocus_edge.cli import _run, app

    bundle = bundle_factory("onnx", "fp32")
    Image.fromarray((np.random.default_rng(1).random((48, 64)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    _run(app, ["predict", str(bundle), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
               "--pixel-spacing", "0.2,0.25", "--json"])
    record = json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]
    assert record["measurements"]["pixel_spacing_mm"] == [0.2, 0.25]
    assert record["measurements"]["area"]["mm2"] == pytest.approx(record["measurements"]["area"]["px"] * 0.05)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _run(app, ["predict", str(bundle), str(tmp_path / "a.png"), "--out", str(tmp_path / "bad"),
                   "--pixel-spacing", "0.2mm"])
    assert exit_info.value.code == 2 and "--pixel-spacing '0.2mm'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _hc_folder(tmp_path: Path, n: int = 24) -> Path:
    """HC18-like folder: ellipse masks stored at 64 x 48 from 200 x 150 sources, head_circumference_mm of the
    ellipse drawn (so the ground-truth masks fit it closely)."""
    root = tmp_path / "hc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = ["file,mask,split,case_id,original_width,original_height,width,height,pixel_size_mm,"
             "resized_pixel_size_mm,head_circumference_mm"]
    rng = np.random.default_rng(5)
    for i in range(n):
        ps = 0.1 + 0.01 * i
        spacing = (ps * 150 / 48, ps * 200 / 64)
        axes = (rng.uniform(14, 20) * spacing[1], rng.uniform(9, 13) * spacing[1])
        mask = ellipse_mask((48, 64), (24 * spacing[0], 32 * spacing[1]), axes, rng.uniform(0, 180), spacing)
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{i}.png")
        Image.fromarray((rng.random((48, 64)) * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        lines.append(f"images/{i}.png,masks/{i}.png,train,{i:03d},200,150,64,48,{ps},{spacing[1]},"
                     f"{ramanujan_circumference(*axes)}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_eval_circumference_rows_and_per_split_summary(tmp_path):
    """A perfect model (its mask = the ground truth): the error equals the ground-truth masks' own fit error."""
    from pocus_edge.finetune.data import load_pair, read_samples
    from pocus_edge.finetune.eval_cli import _per_split
    from pocus_edge.finetune.evaluate import evaluate_outputs
    from pocus_edge.finetune.measure_eval import read_truth

    root = _hc_folder(tmp_path)
    samples = read_samples(root, "segmentation")
    by_image = {s.image: load_pair(s)[1] for s in samples}
    truth = read_truth(root, samples, "ellipse")
    assert truth[samples[0].image].spacing == pytest.approx((0.1 * 150 / 48, 0.1 * 200 / 64))  # per axis

    order = iter(samples)  # evaluate_outputs asks for the samples in order

    def perfect(grays):
        return np.stack([by_image[next(order).image][None] * 20.0 - 10.0 for _ in grays]).astype(np.float32)

    rows = evaluate_outputs("segmentation", samples, ["head"], perfect, truth=truth)["per_image"]
    for row in rows:
        assert row["hc_pred_mm"] == pytest.approx(row["hc_gt_mask_mm"], rel=0.02)
        assert row["hc_abs_diff_mm"] == pytest.approx(abs(row["hc_diff_mm"]))
    splits = {"train": samples[:12], "val": samples[12:18], "test": samples[18:]}
    summary = _per_split(rows, splits, "all")
    assert set(summary) == {"train", "val", "test", "all"} and summary["test"]["images"] == 6
    s = summary["all"]
    assert s["mean_abs_diff_mm"] < 0.5 and s["within_3mm"] == 1.0 and s["no_structure_images"] == 0
    assert s["sd_abs_diff_mm"] == pytest.approx(np.std([r["hc_abs_diff_mm"] for r in rows], ddof=1))
    json.dumps(summary, allow_nan=False)


def test_eval_empty_prediction_counts_as_a_miss():
    from pocus_edge.finetune.measure_eval import CircumferenceTruth, circumference_row, circumference_summary

    truth = CircumferenceTruth(100.0, (0.5, 0.5))
    gt = ellipse_mask((80, 80), (20, 20), (10, 6), 0, (0.5, 0.5))
    rows = [circumference_row(np.zeros_like(gt), gt, truth), circumference_row(gt, gt, truth)]
    assert rows[0]["hc_pred_mm"] is None and rows[0]["hc_abs_diff_mm"] is None
    s = circumference_summary(rows)
    assert s["no_structure_images"] == 1 and s["measured"] == 1 and s["sd_abs_diff_mm"] is None
    json.dumps(s, allow_nan=False)


@pytest.mark.parametrize("column,value,match", [
    ("head_circumference_mm", "", "no positive head_circumference_mm for images/0.png"),
    ("pixel_size_mm", "abc", None),  # resized_pixel_size_mm still gives the spacing
])
def test_eval_truth_needs_the_columns(tmp_path, column, value, match):
    from pocus_edge.finetune.data import read_samples
    from pocus_edge.finetune.measure_eval import read_truth

    root = _hc_folder(tmp_path, n=3)
    lines = (root / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(column)] = value
    (root / "manifest.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    samples = read_samples(root, "segmentation")
    if match:
        with pytest.raises(DataError, match=match):
            read_truth(root, samples, "ellipse")
    else:
        spacing = read_truth(root, samples, "ellipse")[samples[0].image].spacing
        assert spacing == (0.1 * 200 / 64,) * 2
    with pytest.raises(ConfigError, match="--measure 'area': choose ellipse"):
        read_truth(root, samples, "area")


def test_eval_cli_measure_ellipse_writes_per_split_summary_and_rows(bundle_factory, tmp_path, capsys):
    from pocus_edge.cli import _run, app

    root = _hc_folder(tmp_path)
    bundle = bundle_factory("onnx", "fp32")
    _run(app, ["eval", str(bundle), "--data", str(root), "--measure", "ellipse", "--out", str(tmp_path / "ev")])
    assert "HC test: mean abs diff mm" in " ".join(capsys.readouterr().out.split())
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    hc = report["head_circumference"]["test"]
    assert hc["images"] == len(report["per_image"]) and {"mean_abs_diff_mm", "sd_abs_diff_mm", "within_3mm",
                                                          "gt_mask_mean_abs_diff_mm"} <= set(hc)
    assert all(r["split"] == "test" and "hc_true_mm" in r for r in report["per_image"])
    with pytest.raises(SystemExit) as exit_info:
        _run(app, ["eval", str(bundle), "--data", str(root), "--measure", "volume"])
    assert exit_info.value.code == 2 and "--measure 'volume': choose ellipse" in capsys.readouterr().err
