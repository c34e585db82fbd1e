"""Usage errors and out-of-range options: one `error:` line and exit code 2, never a traceback (issue 16, items 4, 6).

Each case runs the real entry point in-process (`pocus_edge.cli._run`, or the pocus-export / pocus-bench /
pocus-distill mains with their argv), so the same code path as the console scripts is exercised without
paying a fresh interpreter per case.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pocus_edge import cli


def run_pocus(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pocus ARGS`, run in this process."""
    with pytest.raises(SystemExit) as info:
        cli._run(cli.app, [str(a) for a in args], prog_name="pocus")
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, *expected: str) -> None:
    """Exit 2, no traceback, and a single `error:` line containing every expected fragment."""
    assert code == 2, err
    assert "Traceback" not in err and "╭" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])


USAGE_CASES = [
    (["distill", "--threads", "two"], ["pocus distill", "'--threads'", "valid integer"]),
    (["distill", "--bogus"], ["No such option: --bogus", "pocus distill --help"]),
    (["distill", "unexpected"], ["unexpected extra argument", "(unexpected)"]),
    (["export"], ["pocus export", "Missing argument 'model'"]),
    (["export", "m"], ["Missing option '--target'"]),
    (["export", "m", "--target"], ["Option '--target' requires an argument"]),
    (["nosuch"], ["No such command 'nosuch'", "see 'pocus --help'"]),
    (["finetune", "seg", "--data", "d", "--out", "o", "--batch-size", "abc"], ["'--batch-size'", "valid integer"]),
    (["sweep", "seg", "--data", "d", "--out", "o", "--epochs", "1.5"], ["'--epochs'"]),
    (["bench", "latency"], ["pocus bench latency", "Missing argument 'bundles'"]),
    (["bench", "latency", "b", "--runs", "x"], ["'--runs'"]),
    (["bench", "nosuch"], ["No such command 'nosuch'", "pocus bench --help"]),
    (["predict", "b", "--smooth", "x"], ["'--smooth'", "valid number"]),
    (["eval"], ["Missing argument 'model'"]),
]


@pytest.mark.parametrize(("args", "expected"), USAGE_CASES, ids=[" ".join(c[0]) for c in USAGE_CASES])
def test_usage_error_is_one_line_exit_2(args, expected, capsys):
    code, _, err = run_pocus(args, capsys)
    assert_one_error_line(code, err, *expected)


ENTRY_POINTS = [
    ("export_main", ["--bogus"], ["pocus export", "No such option: --bogus"]),
    ("bench_main", ["nosuch"], ["pocus bench", "No such command 'nosuch'"]),
    ("distill_main", ["--threads", "two"], ["pocus distill", "'--threads'"]),
]


@pytest.mark.parametrize(("main", "argv", "expected"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_console_scripts_report_usage_errors(main, argv, expected, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [main, *argv])
    with pytest.raises(SystemExit) as info:
        getattr(cli, main)()
    assert_one_error_line(info.value.code, capsys.readouterr().err, *expected)


def test_no_arguments_prints_help_without_traceback(capsys):
    code, out, err = run_pocus([], capsys)
    assert code == 2 and "Traceback" not in err and "distill" in out + err


def test_help_exits_0(capsys):
    cli._run(cli.app, ["distill", "--help"], prog_name="pocus")  # returns: exit code 0
    assert "--threads" in capsys.readouterr().out


# (command, flag, value, the start of the error line after "error: ")
BOUNDS_CASES = [
    ("distill", "--threads", "100000", "--threads 100000: must be between 0 and"),
    ("distill", "--batch-size", "0", "--batch-size 0: must be between 1 and 65536"),
    ("distill", "--image-size", "100", "--image-size 100: must be between 32 and 2048 and a multiple of 32"),
    ("distill", "--image-size", "4096", "--image-size 4096: must be between 32 and 2048"),
    ("distill", "--num-workers", "100000", "--num-workers 100000: must be between 0 and"),
    ("distill", "--held-out-fraction", "0.9", "--held-out-fraction 0.9: must be between 0.0 and 0.5"),
    ("distill", "--epochs", "0", "--epochs 0: must be between 1 and"),
    ("finetune", "--threads", "100000", "--threads 100000: must be between 0 and"),
    ("finetune", "--batch-size", "0", "--batch-size 0: must be between 1 and 1024"),
    ("finetune", "--batch-size", "100000", "--batch-size 100000: must be between 1 and 1024"),
    ("finetune", "--label-fraction", "0", "--label-fraction 0.0: must be > 0.0 and <= 1.0"),
    ("finetune", "--label-fraction", "1.5", "--label-fraction 1.5: must be > 0.0 and <= 1.0"),
    ("finetune", "--image-size", "33", "--image-size 33: must be between 32 and 2048 and a multiple of 32"),
    ("finetune", "--epochs", "0", "--epochs 0: must be between 1 and"),
    ("finetune", "--lr", "-1", "--lr -1.0: must be > 0.0"),
    ("sweep", "--fractions", "0.1,1.5", "--fractions 1.5: must be > 0.0 and <= 1.0"),
    ("sweep", "--batch-size", "0", "--batch-size 0: must be between 1 and 1024"),
    ("export", "--num-parity", "0", "--num-parity 0: must be between 1 and 10000"),
    ("export", "--num-calib", "0", "--num-calib 0: must be between 1 and"),
    ("export", "--image-size", "4000", "--image-size 4000: must be between 32 and 2048"),
    ("predict", "--threads", "100000", "--threads 100000: must be between 1 and"),
    ("predict", "--threads", "0", "--threads 0: must be between 1 and"),
    ("bench latency", "--threads", "1,100000", "--threads 100000: must be between 1 and"),
    ("bench latency", "--batch", "0", "--batch 0: must be between 1 and 256"),
    ("bench latency", "--runs", "0", "--runs 0: must be between 1 and"),
    ("bench latency", "--warmup", "-1", "--warmup -1: must be between 0 and"),
    ("eval", "--threads", "100000", "--threads 100000: must be between 1 and"),
    ("bench parity", "--split", "nope", "--split 'nope': choose test, val, train or all"),
    ("embed-plot", "--per-dataset", "0", "--per-dataset 0: must be between 2 and"),
]


def _command(name: str, tmp: Path) -> list[str]:
    """Every other argument the command needs, valid, so only the flag under test is wrong."""
    data, out = str(tmp / "data"), str(tmp / "out")
    return {
        "distill": ["distill", "--data", data, "--out", out, "--teacher-weights", "random"],
        "finetune": ["finetune", "seg", "--data", data, "--out", out],
        "sweep": ["sweep", "seg", "--data", data, "--out", out],
        "export": ["export", "unet-resnet50", "-t", "onnx", "--out", out],
        "predict": ["predict", str(tmp / "bundle"), "--out", out],
        "bench latency": ["bench", "latency", str(tmp / "bundle")],
        "bench parity": ["bench", "parity", str(tmp / "bundle"), "--reference", str(tmp / "m.safetensors"), "--data",
                         data],
        "eval": ["eval", str(tmp / "model.safetensors"), "--data", data],
        "embed-plot": ["embed-plot", "--encoder", "random", "--data", data, "--out", str(tmp / "out" / "e.png")],
    }[name]


@pytest.mark.parametrize(("command", "flag", "value", "expected"), BOUNDS_CASES,
                         ids=[f"{c} {f} {v}" for c, f, v, _ in BOUNDS_CASES])
def test_out_of_range_option_is_refused_before_work(command, flag, value, expected, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    code, _, err = run_pocus([*_command(command, tmp_path), flag, value], capsys)
    assert_one_error_line(code, err, "error: " + expected)
    assert not (tmp_path / "out").exists(), "a refused command must not create its output folder"


def test_usage_error_in_a_real_process_has_no_traceback():
    """The installed path end to end (python -m pocus_edge.cli): exit 2, one short line on stderr."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pocus_edge.cli", "distill", "--threads", "two"],
                          capture_output=True, text=True, timeout=120)
    assert_one_error_line(proc.returncode, proc.stderr, "pocus_edge.cli distill", "'--threads'")
