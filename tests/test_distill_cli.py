"""End-to-end `pocus distill` runs on synthetic phantoms with a tiny teacher (seconds each)."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from adversarial.test_cli_usage import run_pocus
from conftest import REPO, pocus_here, tiny_config_yaml
from safetensors.torch import load_file

# The CLI runs in this process (pocus_here / run_pocus: the same entry point, without a fresh interpreter that
# imports torch for each case); a real `python -m pocus_edge.cli` process where the process is the point (SIGKILL
# and resume, two DDP processes).


def test_distill_writes_every_output_and_learns(phantom_dir, tmp_path, capsys):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=12, lr=1e-3, save_every="4")
    code, out, err = pocus_here(["distill", "--config", cfg, "--out", tmp_path / "run", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    run = tmp_path / "run"
    for name in ("student.safetensors", "student.json", "config.yaml", "metrics.jsonl", "skipped_files.txt"):
        assert (run / name).is_file(), name
    card = json.loads((run / "student.json").read_text())
    assert card["smoke_test_only"] is True and card["architecture"] == "resnet18"
    assert len(list((run / "checkpoints").glob("step-*.pt"))) == 3  # keep_last default
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert summary["held_out_r2_end"] > summary["held_out_r2_start"]
    assert summary["steps"] == 12 and summary["ranks_in_sync"] is True
    assert summary["allocator"].startswith(("glibc: mmap threshold", "unchanged: "))  # recorded, whichever


def test_flags_override_the_config_file(phantom_dir, tmp_path, capsys):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=4)
    code, _, err = pocus_here(["distill", "--config", cfg, "--out", tmp_path / "run", "--max-steps", "2",
                               "--aug", "natural", "--no-mixup", "--blocks", "0,2", "--aggregate", "mean"], capsys)
    assert code == 0, err
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["aug"] == "natural" and saved["mixup"] is False
    assert saved["blocks"] == [0, 2] and saved["aggregate"] == "mean" and saved["student"] == "resnet18"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--image-size", "100"], "multiple of 32"),
        (["--aug", "medical"], "choose one of ultrasound, natural"),
        (["--teacher-weights", "/nonexistent/dinov3.pth"], "no such file"),
        (["--batch-size", "1000"], "pass --batch-size"),
        (["--save-every", "soon"], "--save-every"),
        (["--student", "resnet9000"], "not a timm model"),
    ],
)
def test_user_errors_end_in_one_clear_line(phantom_dir, tmp_path, capsys, extra, message):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir)
    code, _, err = run_pocus(["distill", "--config", cfg, "--out", tmp_path / "run", *extra], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error:") and message in last_line


def test_missing_teacher_weights_and_empty_data_are_refused_before_training(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_pocus(["distill", "--data", tmp_path / "empty", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "--teacher-weights is required" in err
    code, _, err = run_pocus(["distill", "--data", tmp_path / "empty", "--out", tmp_path / "run",
                              "--teacher-weights", "random"], capsys)
    assert code == 2 and "no usable images found" in err and "Traceback" not in err


def test_existing_run_is_not_overwritten_without_resume(phantom_dir, tmp_path, capsys):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=2)
    assert pocus_here(["distill", "--config", cfg, "--out", tmp_path / "run"], capsys)[0] == 0
    code, _, err = run_pocus(["distill", "--config", cfg, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "pass --resume" in err
    code, _, err = run_pocus(["distill", "--config", cfg, "--out", tmp_path / "run", "--resume", "--seed", "9"],
                             capsys)
    assert code == 2 and "different settings" in err and "seed" in err


def _distill_cmd(cfg, out, *extra):
    return [sys.executable, "-m", "pocus_edge.cli", "distill", "--config", str(cfg), "--out", str(out), *extra]


def test_resume_after_sigkill_ends_with_identical_weights(phantom_dir, tmp_path, capsys):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=10, save_every="2", keep_last=2,
                           lr=1e-3, num_workers=1)
    code, _, err = pocus_here(_distill_cmd(cfg, tmp_path / "ref")[3:], capsys)  # the uninterrupted reference
    assert code == 0, err

    proc = subprocess.Popen(_distill_cmd(cfg, tmp_path / "killed"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt_dir / "step-00000004.pt.sha256").exists():
        assert proc.poll() is None, "the run finished before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "student.safetensors").exists()

    resumed = subprocess.run(_distill_cmd(cfg, tmp_path / "killed", "--resume"), capture_output=True, text=True,
                             cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    expected = load_file(tmp_path / "ref" / "student.safetensors")
    actual = load_file(tmp_path / "killed" / "student.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in x]
    assert steps == list(range(1, 11))  # no step logged twice, none missing


@pytest.mark.parametrize("objective,port", [("token-mse", "29533"), ("masked-consistency", "29534")])
def test_two_process_ddp_with_gloo(phantom_dir, tmp_path, objective, port):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=4, save_every="2", objective=objective)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "pocus_edge.cli", "distill", "--config", str(cfg), "--out", str(tmp_path / "ddp"), "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    finished = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
                if '"finished"' in x]
    assert len(finished) == 1  # rank 0 alone writes
    assert finished[0]["world_size"] == 2 and finished[0]["ranks_in_sync"] is True
    assert finished[0]["micro_batch"] == 4  # global batch 8 split over 2 processes
    assert (tmp_path / "ddp" / "student.safetensors").is_file()


def test_bf16_autocast_runs_on_cpu(phantom_dir, tmp_path, capsys):
    cfg = tiny_config_yaml(tmp_path / "cfg.yaml", phantom_dir, max_steps=2, save_every="2")
    code, out, err = pocus_here(["distill", "--config", cfg, "--out", tmp_path / "run", "--precision", "bf16",
                                 "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 2
    code, _, err = run_pocus(["distill", "--config", cfg, "--out", tmp_path / "run16", "--precision", "fp16"], capsys)
    assert code == 2 and "needs a CUDA GPU" in err
