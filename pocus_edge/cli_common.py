"""Shared pieces of the command line: the console, logging set-up, the summary table, the one `--json FILE`
option, and how usage and disk errors are reported (one `error:` line, exit code 2)."""

from __future__ import annotations

import errno
import inspect
import json
import logging
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand

from .errors import ConfigError
from .task_names import TRAINABLE_TASKS

console = Console(stderr=True, soft_wrap=True)  # never fold a message mid-path: piped output keeps each line whole


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


HELP_SETTINGS: dict[str, Any] = {"max_content_width": 120, "help_option_names": ["--help", "-h"],
                                 **({} if _stdout_is_terminal() else {"terminal_width": 120})}
"""Click context settings for every command: help as wide as the terminal up to 120 columns (120 when piped, so
`pocus --help | less` shows each command's whole summary), and -h."""


def setup_logging(quiet: bool, verbose: bool = False) -> None:
    """Our logs at info (warning with --quiet) through rich on stderr; other libraries' logs and warnings hidden
    unless --verbose (chatter.py)."""
    from .chatter import quiet_libraries

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    quiet_libraries(verbose)


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help="Quiet: no progress bars, info logs or summary table.")


def verbose_option() -> Any:
    return typer.Option(False, "--verbose", "-v", help="Also show other libraries' logs, warnings and progress "
                        "output (absl, TensorFlow Lite, JAX, coremltools, tqdm); hidden by default.")


# --- help text ------------------------------------------------------------------------------------------------

ARCHITECTURE_NAMES = "{architectures}"
"""Put in an option's help where the model registry's architectures belong; RegistryHelpCommand fills it in."""


LIST_METAVARS = {Path: "<path>", str: "<str>", int: "<int>", float: "<float>"}


class _VariadicArgument(TyperArgument):
    """A variadic argument whose help shows its element's type (`images... <path>`) as a single one does, not the
    Python type (`<list[Path]>`); typer appends that type after a metavar too, so a metavar cannot fix it."""

    def display_type(self, ctx: Any) -> str:
        element = typing.get_args(self.type_descriptor.annotation) or (None,)
        return LIST_METAVARS.get(element[0], super().display_type(ctx))


class PocusCommand(TyperCommand):
    """Every pocus command: typer's command with readable help for variadic arguments (_VariadicArgument)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument and param.nargs == -1:
                param.__class__ = _VariadicArgument


class RegistryHelpCommand(PocusCommand):
    """A command whose help names the registry's architectures (ARCHITECTURE_NAMES): filled in when the help is
    shown, because importing the registry loads torch, which `pocus --help` and every other command must not."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from .models.registry import ARCHITECTURES

        names = ", ".join(ARCHITECTURES)
        for param in self.params:
            option: Any = param  # options and typer arguments carry help; click's base Parameter does not
            help_text = getattr(option, "help", None)
            if help_text and ARCHITECTURE_NAMES in help_text:
                option.help = help_text.replace(ARCHITECTURE_NAMES, names)
        super().format_help(ctx, formatter)


def readable_help(app: typer.Typer) -> None:
    """Repeatable options without a metavar show their element's type as typer shows a single value (`<path>`)
    instead of the Python type (`<list[Path]>`), and every command becomes a PocusCommand (variadic arguments
    likewise); run once on the assembled app."""
    apps = [app, *(group.typer_instance for group in app.registered_groups if group.typer_instance)]
    for command in (c for a in apps for c in a.registered_commands):
        callback = command.callback
        if callback is None:
            continue
        if command.cls in (None, TyperCommand):
            command.cls = PocusCommand
        hints = typing.get_type_hints(callback)
        for name, param in inspect.signature(callback).parameters.items():
            if not isinstance(param.default, typer.models.OptionInfo) or param.default.metavar is not None:
                continue
            hint = hints.get(name)
            args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
            if len(args) == 1 and typing.get_origin(args[0]) is list:
                element = typing.get_args(args[0])[0]
                param.default.metavar = LIST_METAVARS.get(element, "<value>")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def task_argument(task: str) -> str:
    """The TASK argument of finetune, sweep and kd (seg | cls) -> the task name; ConfigError otherwise."""
    if task not in TRAINABLE_TASKS:
        raise ConfigError(f"task {task!r}: use seg (segmentation, U-Net) or cls (classification)")
    return TRAINABLE_TASKS[task]


# --- numbers for people ---------------------------------------------------------------------------------------

_SUFFIX_UNITS = (("_per_s", "/s"), ("_seconds", "s"), ("_s", "s"), (" (s)", "s"), ("_ms", "ms"), ("_mb", "MB"))


def human_row(key: str, value: Any) -> tuple[str, str]:
    """(label, text) of a summary row: `seconds_this_session 408.5` -> (`time this session`, `408.5 s`),
    `wall_time_s` -> `wall time`, `images_per_s` -> `images/s`."""
    label, unit = key, ""
    if key == "seconds" or key.startswith("seconds_"):
        label, unit = "time" + key[len("seconds"):], "s"
    else:
        for suffix, name in _SUFFIX_UNITS:
            if key.endswith(suffix) and len(key) > len(suffix):
                label, unit = key[: -len(suffix)], name
                break
    if unit == "/s":
        label, unit = label + "/s", ""
    return label.replace("_", " ").strip(), human_number(value, unit)


def human_number(value: Any, unit: str = "") -> str:
    """408.5 -> '408.5', 0.81234 -> '0.8123', 12345.6 -> '12,346', None -> '-', True -> 'yes'; unit appended."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "undefined"
        size = abs(value)
        text = (f"{value:,.0f}" if size >= 10_000 else f"{value:.1f}" if size >= 100 else
                f"{value:.2f}" if size >= 10 else f"{value:.4g}")
    elif isinstance(value, int):
        text = f"{value:,}" if abs(value) >= 10_000 else str(value)
    else:
        return str(value)
    return f"{text} {unit}" if unit else text


def print_summary(title: str, summary: dict, out) -> None:
    """The end-of-command table on stdout, with labels and numbers written for people."""
    from rich.table import Table

    table = Table(title=f"{title}: {out}", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    for key, value in summary.items():
        table.add_row(*human_row(str(key), value))
    Console(width=max(100, console.width)).print(table)


def print_markdown(text: str) -> None:
    """A Markdown table on stdout exactly as written: never wrapped, piped or not."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# --- --json FILE -----------------------------------------------------------------------------------------------

JSON_STDOUT = "-"


def _check_json_target(value: Path | None) -> Path | None:
    """--json's target: `-` (stdout) or a file that is new or already JSON; never a folder or an input file."""
    if value is None or str(value) == JSON_STDOUT:
        return value
    if value.is_dir():
        raise ConfigError(f"--json {value}: is a folder; give the file to write, e.g. --json {value / 'out.json'}, "
                          "or --json - for stdout")
    if value.exists() and value.suffix.lower() != ".json":
        raise ConfigError(f"--json {value}: exists and is not a .json file; --json takes the file to write (use "
                          "--json - for stdout, and give input files before --json or after --)")
    return value


def json_option(what: str) -> Any:
    """The one `--json FILE` option of every command: write WHAT as JSON to FILE, `-` for stdout.

    A bare `--json` (the earlier flag of distill, export, info, predict, finetune, qat and eval, which printed to
    stdout) still means stdout: `_run` turns it into `--json -` (json_stdout_argv)."""
    return typer.Option(None, "--json", metavar="FILE", callback=_check_json_target,
                        help=f"Write {what} as JSON to FILE; `--json -` prints it to stdout instead of the table.")


def emit_json(target: Path | None, data: Any) -> bool:
    """Write `data` to --json's target; True when it went to stdout (then print nothing else there)."""
    from .io import atomic_write_json, nan_to_null

    if target is None:
        return False
    if str(target) == JSON_STDOUT:
        print(json.dumps(nan_to_null(data), indent=2, allow_nan=False))
        return True
    _check_json_target(target)
    atomic_write_json(target, nan_to_null(data))
    return False


def json_stdout_argv(args: list[str], command: Any) -> list[str]:
    """A bare `--json` (at the end, or before another option) -> `--json -` where the command's --json takes a
    value: the old stdout flag keeps working now that --json names a file everywhere."""
    cmd, i = command, 0
    while i < len(args) and args[i] in getattr(cmd, "commands", {}):
        cmd, i = cmd.commands[args[i]], i + 1
    option = next((p for p in getattr(cmd, "params", []) if "--json" in getattr(p, "opts", [])), None)
    if option is None or getattr(option, "is_flag", False):
        return args
    out = list(args)
    for j in range(len(out) - 1, -1, -1):
        if out[j] == "--json" and (j + 1 == len(out) or (out[j + 1].startswith("-") and out[j + 1] != "-")):
            if "--" in out[:j]:
                continue
            out.insert(j + 1, JSON_STDOUT)
    return out


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error classes, abort classes) of typer's vendored click (typer >= 0.29) and of click itself (older
    typer raises those); whichever of the two is importable."""
    import typer

    usage: list[type] = []
    abort: list[type] = [typer.Abort]
    try:
        from typer._click import exceptions as vendored

        usage.append(vendored.ClickException)
    except ImportError:
        pass
    try:
        import click

        usage.append(click.exceptions.ClickException)
        abort.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(abort)


def usage_exit_code(exc: BaseException) -> int | None:
    """Print a click/typer usage error as one `error:` line and return its exit code (2); None for other errors."""
    usage, abort = _click_exception_types()
    if isinstance(exc, abort):
        console.print("aborted", highlight=False)
        return 1
    if not isinstance(exc, usage):
        return None
    error: Any = exc  # a click UsageError / ClickException (types looked up at run time)
    message = error.format_message()
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed already (rich) or is the message
        if message:
            print(message)
        return error.exit_code
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    text = " ".join(str(message).split()).rstrip(".")
    console.print(f"[red]error:[/red] {escape(where + text + hint)}", highlight=False, soft_wrap=True)
    return error.exit_code


WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}
USER_ERRNOS = WRITE_ERRNOS | {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                              errno.ENAMETOOLONG, errno.ENOENT}


def os_error_line(exc: OSError) -> str | None:
    """One-line text for a disk or permission problem the user can fix (full or read-only disk, no permission, a
    file where a folder belongs); None for other OS errors, which stay tracebacks."""
    if exc.errno not in USER_ERRNOS:
        return None
    reason = exc.strerror or str(exc)
    if exc.errno in WRITE_ERRNOS:
        target = f" {exc.filename}" if exc.filename else " the output"
        return f"cannot write{target}: {reason}; choose another --out (or free space)"
    target = exc.filename if exc.filename else "a file"
    return f"{target}: {reason}; check the path and its permissions, or choose another --out"
