"""Units behind the CLI's error handling: limits.check / check_out, DistillConfig type checks, manifest.csv
reading, and how `_run` maps exceptions to exit codes (issue 16, items 4, 6, 8)."""

from __future__ import annotations

import errno
import os

import pytest
import typer

from pocus_edge import cli
from pocus_edge.cli_common import os_error_line, usage_exit_code
from pocus_edge.data.readers import read_manifest_csv
from pocus_edge.distill.config import check_type, load_config
from pocus_edge.errors import ConfigError, DataError
from pocus_edge.limits import BOUNDS, check, check_out


@pytest.mark.parametrize(("name", "value", "message"), [
    ("threads", 0, None),
    ("threads", 4 * (os.cpu_count() or 1), None),
    ("threads", 4 * (os.cpu_count() or 1) + 1, "must be between 0 and"),
    ("threads", -1, "must be between 0 and"),
    ("threads", 2.0, "expected an integer"),
    ("threads", True, "expected an integer"),
    ("image_size", 2048, None),
    ("image_size", 2080, "must be between 32 and 2048 and a multiple of 32"),
    ("image_size", 48, "a multiple of 32"),
    ("label_fraction", 1, None),
    ("label_fraction", 1e-9, None),
    ("label_fraction", 0.0, "must be > 0.0 and <= 1.0"),
    ("held_out_fraction", float("nan"), "must be a finite number"),
    ("num_parity", 10_001, "must be between 1 and 10000"),
])
def test_check_bounds(name, value, message):
    if message is None:
        assert check(name, value) == value
    else:
        with pytest.raises(ConfigError, match=message):
            check(name, value)


def test_every_bound_is_consistent():
    for name, bound in BOUNDS.items():
        assert bound.low < bound.upper(), name
        check(name, bound.upper())  # the upper end itself is allowed


def test_check_out_refuses_files_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_out(tmp_path / "file" / "sub" / "run")
    assert check_out(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()


def test_config_types_coerce_only_what_is_unambiguous(tmp_path):
    assert check_type("lr", 1, "x") == 1.0 and isinstance(check_type("lr", 1, "x"), float)
    assert check_type("save_every", 500, "x") == "500"
    assert check_type("blocks", [-2, -1], "x") == [-2, -1]
    with pytest.raises(ConfigError, match="blocks must be a list of integers, got \\[1.5\\]"):
        check_type("blocks", [1.5], "x")
    config = tmp_path / "c.yaml"
    config.write_text("data: one/folder\nsave_every: 500\nlr: 1\n")
    cfg = load_config(config, {})
    assert cfg.data == ["one/folder"] and cfg.save_every == "500" and cfg.lr == 1.0


def test_config_validate_checks_types_of_programmatic_configs(tmp_path):
    from pocus_edge.distill.config import DistillConfig

    cfg = DistillConfig(data=[str(tmp_path)], out=str(tmp_path / "run"), teacher_weights="random", batch_size="8")
    with pytest.raises(ConfigError, match="setting: batch_size must be an integer"):
        cfg.validate()


def test_manifest_csv_accepts_bom_and_refuses_windows_paths(tmp_path):
    (tmp_path / "manifest.csv").write_bytes("\ufefffile,mask\na.png,m.png\n".encode())
    assert read_manifest_csv(tmp_path) == [{"file": "a.png", "mask": "m.png"}]
    (tmp_path / "manifest.csv").write_text("file,mask\nC:\\scans\\a.png,m.png\n")
    with pytest.raises(DataError, match="line 2: file .* points outside"):
        read_manifest_csv(tmp_path)


def test_os_errors_that_are_bugs_stay_tracebacks():
    assert os_error_line(OSError(errno.EPIPE, "Broken pipe")) is None
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device")) == (
        "cannot write the output: No space left on device; choose another --out (or free space)")


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def go() -> None:
        raise exc

    @app.command()
    def other() -> None:  # two commands, so `go` is a subcommand as in pocus
        pass

    return app


@pytest.mark.parametrize(("exc", "code"), [(typer.Exit(3), 3), (typer.Exit(0), None), (typer.Abort(), 1)])
def test_run_keeps_exit_codes(exc, code, capsys):
    if code is None:
        cli._run(_app_raising(exc), ["go"])
        return
    with pytest.raises(SystemExit) as info:
        cli._run(_app_raising(exc), ["go"])
    assert info.value.code == code and "Traceback" not in capsys.readouterr().err


def test_run_lets_bugs_raise():
    with pytest.raises(RuntimeError, match="a bug"):
        cli._run(_app_raising(RuntimeError("a bug")), ["go"])


def test_real_click_usage_errors_are_handled_too(capsys):
    """Older typer raised click's own exceptions (not the vendored copy): both are usage errors."""
    click = pytest.importorskip("click")
    assert usage_exit_code(click.UsageError("bad flag")) == 2
    assert capsys.readouterr().err.strip() == "error: bad flag"
