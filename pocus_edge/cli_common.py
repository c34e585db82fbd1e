"""Shared pieces of the command line: the console, logging set-up, the summary table, and how usage and disk
errors are reported (one `error:` line, exit code 2)."""

from __future__ import annotations

import errno
import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

console = Console(stderr=True)


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "absl", "coremltools", "litert_torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_summary(title: str, summary: dict, out) -> None:
    from rich.table import Table

    table = Table(title=f"{title}: {out}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


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
    message = exc.format_message()
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed already (rich) or is the message
        if message:
            print(message)
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    text = " ".join(str(message).split()).rstrip(".")
    console.print(f"[red]error:[/red] {escape(where + text + hint)}", highlight=False, soft_wrap=True)
    return exc.exit_code


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
