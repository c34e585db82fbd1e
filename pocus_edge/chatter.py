"""Other libraries' chatter stays out of sight unless --verbose: absl, TensorFlow Lite and oneDNN notices, JAX
lowering and TPU probes, coremltools' missing-library lines, version warnings and tqdm bars.

Three layers, because the chatter comes three ways:
- Python loggers of other libraries are raised to ERROR and their `warnings` are ignored (ours still show);
- environment switches the libraries read at start-up (TF_CPP_MIN_LOG_LEVEL, GLOG_minloglevel, TQDM_DISABLE,
  TORCH_LOGS), set only when the user has not set them;
- whatever native code still writes to file descriptor 2 goes to a temporary file while a command runs
  (`hidden_native_stderr`); our logs, progress bars and `error:` lines go to the real stderr through `sys.stderr`.
  When a command fails with a traceback (a bug), the last hidden lines are shown with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

LIBRARY_LOGGERS = ("absl", "coremltools", "jax", "jax._src", "tensorflow", "tflite_runtime", "ai_edge_litert",
                   "litert_torch", "ai_edge_torch", "onnxscript", "onnx_ir", "onnxruntime", "torch", "torch.onnx",
                   "torch._dynamo", "torch._inductor", "torch.export", "torch.fx", "torchao", "timm", "matplotlib",
                   "PIL", "h5py", "numexpr", "urllib3", "filelock", "huggingface_hub")
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "TQDM_DISABLE": "1",
                     "TORCH_LOGS": "-torch"}  # torch sets its loggers' levels when imported, after ours: tell it
TAIL_LINES = 30


def quiet_libraries(verbose: bool) -> None:
    """Other libraries' loggers at ERROR and their warnings ignored, unless `verbose` (then both as they come)."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    if verbose:
        return
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"pocus_edge(\.|$)")


def quiet_environment(verbose: bool) -> None:
    """Set the native libraries' own quiet switches (read when they load), leaving any the user set."""
    if verbose:
        return
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def _stderr_is_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capsys and other in-memory streams
        return False


@contextlib.contextmanager
def hidden_native_stderr(verbose: bool) -> Iterator[None]:
    """Send native writes to fd 2 into a temporary file while `sys.stderr` (ours) keeps the real stream; shows the
    hidden tail when the body fails with a non-exit exception. A no-op with `verbose` or when stderr is not fd 2."""
    if verbose or not _stderr_is_fd2():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    hidden = tempfile.TemporaryFile(prefix="pocus-chatter-")
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                     errors="backslashreplace")
    original = sys.stderr
    os.dup2(hidden.fileno(), 2)
    sys.stderr = real
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        _show_tail(hidden, real)
        raise
    finally:
        real.flush()
        sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)
        real.close()
        hidden.close()


def _show_tail(hidden, real) -> None:
    hidden.flush()
    hidden.seek(0)
    lines = hidden.read().decode("utf-8", "backslashreplace").splitlines()
    if lines:
        real.write(f"--- last {min(len(lines), TAIL_LINES)} of {len(lines)} hidden library output lines "
                   "(--verbose shows them as they come) ---\n" + "\n".join(lines[-TAIL_LINES:]) + "\n---\n")
