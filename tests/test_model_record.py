"""The model record (issue 17 s.4): record.json + MODEL_CARD.md in every bundle, generated at export.

One tiny real chain (random ViT teacher -> pocus distill -> pocus finetune -> pocus-export onnx fp32, ~20 s) proves
the lineage with each step's sha256, smoke_test_only carried down to prediction results, the card rendered from the
record and sealed by the bundle digest, and the data digests recomputable from the frames. Synthetic cards cover
the kd and ViT-backbone chains and missing or changed ancestors without training anything.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import REPO, tiny_config_yaml
from torch import nn

from pocus_edge import __version__
from pocus_edge.export.record import PLACEHOLDER_LIMITATIONS, PLACEHOLDER_USE, digest_of, trace_lineage
from pocus_edge.export.record_card import render_card
from pocus_edge.io import sha256_file
from pocus_edge.models.encoder_io import save_encoder


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.distill.config import load_config
    from pocus_edge.distill.trainer import run_distillation
    from pocus_edge.export import export
    from pocus_edge.finetune.train import FinetuneConfig, run_finetune

    root = tmp_path_factory.mktemp("record")
    data = write_phantom_dataset(root / "ph", 40, size=(64, 64), seed=1)
    (data / "README.md").write_text("# Phantoms\n\nSome text about licences in general.\n\n"
                                    "## License: CC0 (synthetic test phantoms)\n")
    run_distillation(load_config(tiny_config_yaml(root / "d.yaml", data, out=str(root / "distill"), max_steps=2,
                                                  save_every="2"), {}))
    student = root / "distill" / "student.safetensors"
    run_finetune(FinetuneConfig(task="segmentation", data=str(data), out=str(root / "ft"), encoder=str(student),
                                architecture="resnet18", epochs=1, image_size=64, batch_size=8, threads=1,
                                max_steps_per_epoch=2))
    ft = root / "ft" / "model.safetensors"
    bundle = root / "bundle"
    export(str(ft), "onnx", "fp32", bundle, parity_data=data, num_parity=8)
    return SimpleNamespace(root=root, data=data, student=student, ft=ft, bundle=bundle)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_random_teacher_is_smoke_test_only_from_card_to_prediction(chain, tmp_path, capsys):
    from pocus_edge.cli import _run, app
    from pocus_edge.runtime import load
    from pocus_edge.runtime.predict import run_predict, summary_line

    student_card, ft_card = _json(chain.student.with_suffix(".json")), _json(chain.ft.with_suffix(".json"))
    assert student_card["smoke_test_only"] is True and ft_card["smoke_test_only"] is True  # finetune keeps it
    manifest, record = _json(chain.bundle / "manifest.json"), _json(chain.bundle / "record.json")
    assert manifest["smoke_test_only"] is True and record["smoke_test_only"] is True
    steps = record["lineage"]
    assert [s["step"] for s in steps] == ["teacher", "distilled student (pocus distill)",
                                         "fine-tuned checkpoint (pocus finetune)", "bundle"]
    assert all(s["smoke_test_only"] for s in steps)
    assert steps[0]["file"] == "random weights" and steps[0]["sha256"] is None
    assert steps[0]["architecture"] == "vit_small_patch16_dinov3"
    assert record["smoke_test_reasons"] == ["random-weight teacher (--teacher-weights random)"]
    assert steps[1] == {**steps[1], "file": str(chain.student), "used_as": "initialisation",
                        "sha256": sha256_file(chain.student)}
    assert steps[1]["sha256"] == student_card["weights_sha256"] == ft_card["init_sha256"]
    assert steps[2]["file"] == str(chain.ft) and steps[2]["sha256"] == ft_card["weights_sha256"]
    assert steps[2]["sha256"] == manifest["source"]["sha256"]
    assert steps[3]["sha256"] == manifest["files"]["model.onnx"] == sha256_file(chain.bundle / "model.onnx")
    card = (chain.bundle / "MODEL_CARD.md").read_text()
    assert card.startswith("> **WARNING: SMOKE TEST ONLY.**")

    _run(app, ["info", str(chain.bundle)])
    out = capsys.readouterr().out
    assert "warning: smoke_test_only: this model descends from random weights" in out
    assert "YES: descends from random weights" in out

    result = load(chain.bundle)(np.zeros((64, 64), np.uint8))
    assert result.to_json()["smoke_test_only"] is True
    image = sorted((chain.data / "images").glob("*.png"))[0]
    report = run_predict(chain.bundle, [image], None, tmp_path / "pred", None, 1, 0.0)
    on_disk = _json(tmp_path / "pred" / "results.json")
    assert on_disk["smoke_test_only"] is True and [r["smoke_test_only"] for r in on_disk["results"]] == [True]
    assert "WARNING: smoke_test_only model" in summary_line(report)


def test_card_is_the_record_rendered_and_sealed_by_the_digest(chain, tmp_path, capsys):
    from pocus_edge.cli import _run, app
    from pocus_edge.runtime import load
    from pocus_edge.runtime.manifest import BundleError

    manifest, record = _json(chain.bundle / "manifest.json"), _json(chain.bundle / "record.json")
    card = (chain.bundle / "MODEL_CARD.md").read_text()
    assert render_card(record) == card  # generated from the record, nothing else
    for name in ("record.json", "MODEL_CARD.md"):
        assert manifest["files"][name] == sha256_file(chain.bundle / name)
        assert f"  {name}\n" in (chain.bundle / "bundle.sha256").read_text()
    # the card states what the record says
    assert record["intended_use"] == {"text": PLACEHOLDER_USE, "given": False, "source": None}
    assert f"**{PLACEHOLDER_USE}**" in card and f"- {PLACEHOLDER_LIMITATIONS}" in card
    for step in record["lineage"]:
        assert step["sha256"] is None or step["sha256"] in card
    assert record["license"] == {"model": "unspecified", "model_source": None,
                                 "data": [{"folder": str(chain.data), "license": "CC0 (synthetic test phantoms)"}]}
    assert "- Model: unspecified" in card and f"- Data {chain.data}: CC0 (synthetic test phantoms)" in card
    metrics = _json(chain.ft.parent / "metrics.json")
    assert record["metrics"]["split"] == "test" and record["metrics"]["images"] == metrics["test"]["images"]
    assert record["metrics"]["values"] == {k: v for k, v in metrics["test"].items() if k != "images"}
    assert f"Split `test` ({metrics['test']['images']} images" in card
    software = record["software"]
    assert software["pocus-edge"] == __version__ and software["packages"]["numpy"] == importlib.metadata.version(
        "numpy")
    if (REPO / ".git").exists():  # a checkout: its commit; else (an installed package) null
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert software["git"]["commit"] == commit.strip() and commit.strip() in card
    else:
        assert software["git"] is None and "not a git checkout" in card
    assert f"{len(software['packages'])} installed Python packages" in card

    _run(app, ["info", str(chain.bundle), "--card"])
    assert capsys.readouterr().out == card
    tampered = tmp_path / "b"
    shutil.copytree(chain.bundle, tampered)
    (tampered / "MODEL_CARD.md").write_text(card.replace("SMOKE TEST ONLY", "validated"))
    with pytest.raises(BundleError, match="MODEL_CARD.md"):
        load(tampered)


def test_data_digests_are_recomputable_from_the_frames(chain):
    from pocus_edge.data.corpus import pixel_digest
    from pocus_edge.data.readers import read_frame
    from pocus_edge.export.data import calibration_and_parity
    from pocus_edge.export.quantize_calib import frame_digest

    data = _json(chain.bundle / "record.json")["data"]
    distilled, finetuned = data["training"]
    assert distilled["folders"] == [str(chain.data)] and distilled["digest"] is None  # not recorded by distill
    assert finetuned["folders"] == [str(chain.data)] and finetuned["checkpoint"] == str(chain.ft)
    with open(chain.ft.parent / "splits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [pixel_digest(read_frame(Path(r["image"]))) for r in rows if r["split"] == "train"]
    test = [pixel_digest(read_frame(Path(r["image"]))) for r in rows if r["split"] == "test"]
    assert finetuned["frames"]["train"] == len(train) and finetuned["digest"] == digest_of(train)
    assert finetuned["splits"]["test"] == {"frames": len(test), "digest": digest_of(test)}
    parity = calibration_and_parity(None, chain.data, 0, 8)[1]
    assert data["parity"]["folder"] == str(chain.data) and data["parity"]["frames"] == 8
    assert data["parity"]["digest"] == digest_of([frame_digest(im) for im in parity.images])
    assert data["calibration"] is None  # fp32: nothing calibrated


def test_intended_use_licence_and_yaml_through_the_cli(chain, tmp_path):
    from pocus_edge.cli import _run, app

    record_yaml = tmp_path / "record.yaml"
    record_yaml.write_text(yaml.safe_dump({"intended_use": "overridden by the flag", "limitations": ["Phantoms only"],
                                           "data_licenses": {"ph": "stated in the YAML"}, "contact": "a@b.c"}))
    out = tmp_path / "bundle"
    _run(app, ["export", str(chain.ft), "-t", "onnx", "--out", str(out), "--parity-data", str(chain.data),
               "--num-parity", "4", "--intended-use", "Research on phantoms", "--record", str(record_yaml),
               "--license", "Apache-2.0", "--quiet"])
    record, card = _json(out / "record.json"), (out / "MODEL_CARD.md").read_text()
    assert record["intended_use"] == {"text": "Research on phantoms", "given": True, "source": "--intended-use"}
    assert record["limitations"] == [
        "SMOKE TEST ONLY: it descends from random weights; its outputs carry no meaning", "Phantoms only"]
    assert record["license"]["model"] == "Apache-2.0" and record["license"]["model_source"] == "--license"
    assert record["license"]["data"] == [{"folder": str(chain.data), "license": "stated in the YAML"}]
    assert "Research on phantoms\n\n(stated with --intended-use)" in card and "NOT GIVEN" not in card
    assert "- Model: Apache-2.0 (stated with --license)" in card and "Contact: a@b.c" in card
    assert render_card(record) == card


def test_a_missing_or_changed_ancestor_is_recorded_never_invented(chain, tmp_path):
    ft = tmp_path / "ft"
    shutil.copytree(chain.ft.parent, ft)
    gone = tmp_path / "gone" / "student.safetensors"
    config = yaml.safe_load((ft / "config.yaml").read_text())
    (ft / "config.yaml").write_text(yaml.safe_dump({**config, "encoder": str(gone)}))
    init = _json(ft / "model.json")["init_sha256"]
    lineage = trace_lineage(str(ft / "model.safetensors"), str(ft / "model.safetensors"))
    assert lineage.steps[0] == {"step": "checkpoint", "used_as": "initialisation", "file": "not found",
                                "recorded_path": str(gone), "sha256": init, "smoke_test_only": None}
    assert len(lineage.steps) == 2 and lineage.smoke_test_only  # the card's own flag still marks it
    assert lineage.smoke_reasons == [f"the card of {ft / 'model.safetensors'} says smoke_test_only (no recorded "
                                     "ancestor explains it)"]
    gone.parent.mkdir()
    shutil.copy(chain.student, gone)
    shutil.copy(chain.student.with_suffix(".json"), gone.with_suffix(".json"))
    gone.write_bytes(gone.read_bytes() + b"\0")  # changed after the fine-tune: not followed
    first = trace_lineage(str(ft / "model.safetensors"), str(ft / "model.safetensors")).steps[0]
    assert first["sha256"] == init and first["found_sha256"] == sha256_file(gone) and "changed since" in first["file"]


def _ckpt(path: Path, extra: dict, seed: int) -> str:
    import torch

    torch.manual_seed(seed)
    return save_encoder(path, nn.Linear(2, 2), "resnet18", 64, extra)["weights_sha256"]


def test_kd_chain_and_vit_backbone_and_builtin(tmp_path):
    teacher = tmp_path / "vit.safetensors"
    teacher.write_bytes(b"teacher weights")
    student = tmp_path / "student.safetensors"
    s_sha = _ckpt(student, {"origin": "pocus distill", "teacher": "vit_base_patch16_dinov3",
                            "teacher_weights": str(teacher), "teacher_weights_sha256": sha256_file(teacher),
                            "smoke_test_only": False}, 0)
    big = tmp_path / "big" / "model.safetensors"
    big.parent.mkdir()
    b_sha = _ckpt(big, {"kind": "task_model", "init_sha256": s_sha, "encoder_origin": f"{student} (sha256 "
                        f"{s_sha[:12]})", "smoke_test_only": False}, 1)
    kd1 = tmp_path / "kd" / "student.safetensors"
    kd1.parent.mkdir()
    k_sha = _ckpt(kd1, {"kind": "task_model", "origin": "pocus kd (distillation)", "smoke_test_only": False,
                        "teacher": {"checkpoint": str(big), "teacher_sha256": b_sha}}, 2)
    final = tmp_path / "model.safetensors"
    _ckpt(final, {"kind": "task_model", "origin": "pocus kd", "init_sha256": k_sha, "kd_student_sha256": k_sha,
                  "encoder_origin": "elsewhere (sha256 0123456789ab)", "smoke_test_only": False,
                  "teacher": {"checkpoint": str(big), "teacher_sha256": b_sha}}, 3)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"encoder": str(kd1)}))  # wins over encoder_origin
    lineage = trace_lineage(str(final), str(final))
    assert [(s["step"], s.get("used_as"), s["sha256"]) for s in lineage.steps] == [
        ("teacher", None, sha256_file(teacher)), ("distilled student (pocus distill)", "initialisation", s_sha),
        ("fine-tuned checkpoint (pocus finetune)", "teacher", b_sha),
        ("distilled student (pocus kd stage 1)", "initialisation", k_sha),
        ("fine-tuned checkpoint (pocus kd stage 2)", None, sha256_file(final))]
    assert not lineage.smoke_test_only and lineage.steps[0]["file"] == str(teacher)

    vit = tmp_path / "vit" / "model.safetensors"
    vit.parent.mkdir()
    _ckpt(vit, {"kind": "task_model", "init_sha256": "ab" * 32, "smoke_test_only": True, "encoder_origin": "x",
                "backbone": {"architecture": "vit_small_patch16_dinov3", "weights": "random", "sha256": "ab" * 32}}, 4)
    steps = trace_lineage(str(vit), str(vit)).steps
    assert steps[0] == {"step": "frozen ViT backbone", "architecture": "vit_small_patch16_dinov3", "sha256": "ab" * 32,
                        "file": "random weights", "smoke_test_only": True,
                        "smoke_reason": "random ViT backbone (--backbone-weights random)"}
    assert "smoke_reason" not in steps[1] and steps[1]["smoke_test_only"]
    builtin = trace_lineage("unet-resnet18", "built-in:unet-resnet18 (random weights)")
    assert builtin.smoke_test_only and builtin.smoke_reasons == ["built-in model unet-resnet18 has random weights"]


def test_info_card_on_a_bundle_exported_before_records(chain, tmp_path, capsys):
    from pocus_edge.cli import _run, app
    from pocus_edge.runtime.integrity import seal

    old = tmp_path / "old"
    shutil.copytree(chain.bundle, old)
    manifest = _json(old / "manifest.json")
    for name in ("record.json", "MODEL_CARD.md"):
        (old / name).unlink()
        del manifest["files"][name]
    del manifest["smoke_test_only"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    seal(old)
    _run(app, ["info", str(old)])
    assert "unknown (exported before the flag existed)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        _run(app, ["info", str(old), "--card"])
    assert exc.value.code == 2
    assert "holds no MODEL_CARD.md (exported before model records existed); re-export it" in capsys.readouterr().err


def test_calibration_and_search_frames_match_calibration_frames_json(tmp_path):
    from pocus_edge.export.data import phantom_set
    from pocus_edge.export.quantize_calib import write_frame_record
    from pocus_edge.export.record import export_frames

    calib, parity, search = phantom_set(5, seed=1), phantom_set(3, seed=50), phantom_set(2, seed=70)
    write_frame_record(tmp_path, calib, parity, {"calibration_method": "minmax"}, search)
    listed_name = "calibration_frames.json"
    listed = _json(tmp_path / listed_name)
    frames = export_frames(tmp_path, calib, parity)
    for role in ("calibration", "parity", "mixed_precision_search"):
        assert frames[role]["digest"] == digest_of([f["sha256"] for f in listed[role]["frames"]]), role
        assert frames[role]["frames"] == listed[role]["count"] and frames[role]["frame_list"] == listed_name
    assert frames["calibration"]["digest"] != frames["parity"]["digest"]
    assert "frame_list" not in export_frames(tmp_path / "none", None, parity)["parity"]
