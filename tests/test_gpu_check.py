"""benchmarks/gpu/check.sh works before it first meets a GPU: the CPU dry run goes through every phase (eager,
torch.compile, 2-process DDP) and writes the JSON and Markdown; set-up stops at once when pip cannot install."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time

import pytest
import torch
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu" / "check.sh"


def _load(name: str = "check"):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", REPO / "benchmarks" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_goes_through_every_phase_and_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert report["dry_run"] is True and report["environment"]["device"] == "cpu"
    setup = report["setup"]
    assert (setup["global_batch"], setup["micro_batch"], setup["accum_steps"]) == (8, 4, 2)
    assert setup["teacher"] == "vit_small_patch16_dinov3" and setup["image_size"] == 64
    flops = report["flops"]
    assert flops["train_step_per_image"] > flops["teacher_forward_per_image"] > 0
    assert flops["per_optimizer_step"] == pytest.approx(flops["train_step_per_image"] * 8)
    runs = {run["name"]: run for run in report["runs"]}
    assert list(runs) == ["eager bf16", "DDP 2 processes on one device", "torch.compile bf16"]  # compile last
    for run in runs.values():
        assert run["status"] == "ok", run
        assert run["images_per_s"] > 0 and run["steps_timed"] == 2 and run["tflops"] > 0
        assert run["share_of_bf16_peak"] is None  # no peak on CPU unless --peak-tflops
    assert runs["torch.compile bf16"]["backend"] == "aot_eager"
    assert runs["DDP 2 processes on one device"]["backend"] == "gloo"
    assert len(runs["DDP 2 processes on one device"]["per_rank_memory"]) == 2
    markdown = (tmp_path / "dry_run.md").read_text()
    assert "dry run on CPU" in markdown and "| torch.compile bf16 | ok |" in markdown
    assert not list(tmp_path.glob(".ddp_rank*")) and not list(tmp_path.glob("*.tmp"))
    assert time.monotonic() - t0 < 120  # ~25 s alone on 2 cores; generous for a loaded CI machine


def test_set_up_fails_fast_with_a_clear_message_when_pip_cannot_install(tmp_path):
    env = {**os.environ, "POCUS_GPU_CHECK_VENV": str(tmp_path / "venv"), "PIP_CONFIG_FILE": os.devnull,
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "",
           "POCUS_GPU_CHECK_BASE_PYTHON": _python_without_torch()}  # the checkout's .venv is not looked at
    t0 = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out")], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 3
    assert "check.sh: pip cannot install torch==2.14.1 torchvision==0.29.1" in result.stderr
    assert "POCUS_PYTHON" in result.stderr and not (tmp_path / "out").exists()
    assert time.monotonic() - t0 < 60


def _python_without_torch() -> str:
    """An interpreter that cannot import torch (the system one here; skip where every one has torch)."""
    import shutil

    for name in ("python3", "/usr/bin/python3"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", "import venv, torch"], capture_output=True).returncode != 0:
            if subprocess.run([path, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0:
                return path
    pytest.skip("no python3 without torch (and with venv + ensurepip) on this machine")


def test_flops_and_report_arithmetic_and_a_refused_ddp_run_is_said():
    check = _load()
    flops = {"train_step_per_image": 80e9, "teacher_forward_per_image": 47e9, "per_optimizer_step": 80e9 * 512}
    run = check.with_flops({"name": "eager bf16", "status": "ok", "images_per_s": 4000.0}, flops, 790.0)
    assert run["tflops"] == pytest.approx(320.0) and run["share_of_bf16_peak"] == pytest.approx(320 / 790, abs=1e-4)
    refused = {"name": "DDP 2 processes on one device", "status": "not possible", "backend": "nccl",
               "reason": "nccl refused or failed 2 processes on one device: DistBackendError: Duplicate GPU detected"}
    report = {"dry_run": False, "command": "benchmarks/gpu/check.sh", "created_at": "now", "peak_tflops": 790.0,
              "peak_source": "H200 bf16 matmul peak measured in this workplace", "matmul_bf16_tflops": 702.3,
              "environment": {"device": "cuda:0", "gpu": "NVIDIA H200", "torch": "2.11", "timm": "1.0.20"},
              "setup": {"teacher": "vit_base_patch16_dinov3", "student": "resnet50", "image_size": 256,
                        "objective": "token-mse", "global_batch": 512, "micro_batch": 128, "accum_steps": 4},
              "flops": flops, "runs": [run, refused], "elapsed_s": 1.0}
    text = _load("check_report").markdown(report)
    assert "| eager bf16 | ok | 4000.0 | – | 320.0 | 40.5 % |" in text
    assert "| DDP 2 processes on one device | not possible |" in text
    assert "- DDP 2 processes on one device: nccl refused or failed 2 processes on one device: " in text
    assert "80.0 GFLOP (teacher forward 47.0)" in text
    assert "790.0 TFLOP/s (H200 bf16 matmul peak measured in this workplace); a bf16 8192^3 matmul ran at 702.3" in text


def test_the_check_times_the_distill_loops_own_step(monkeypatch):
    """Not a copy of the step: Bench calls TrainStep.train_step, with the loop's channels_last student."""
    from pocus_edge.distill.trainer import TrainStep

    check = _load()
    calls = []
    original = TrainStep.train_step

    def spy(self, micro_batches):
        calls.append(len(micro_batches))
        return original(self, micro_batches)

    monkeypatch.setattr(TrainStep, "train_step", spy)
    bench = check.Bench(check.parse_args(["--dry-run"]), torch.device("cpu"))
    loss = bench.step()
    assert calls == [2] and loss > 0 and bench.trainer.step == 1
    conv = bench.trainer.student.encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert check.bf16_peak(check.parse_args(["--dry-run"]), torch.device("cpu"))[:2] == (None, "none on CPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_without_a_gpu_the_real_check_refuses_instead_of_measuring_the_cpu(tmp_path, capsys):
    assert _load().main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU is visible; run with --dry-run" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
