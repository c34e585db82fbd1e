"""Export layer: MODEL -> self-describing, verified bundle for onnx, tflite, coreml or tensorrt.

`export(model, target, precision, out, ...)` is the Python API; `pocus-export` / `pocus export` call it.
`targets.py` is the capability table; it imports nothing heavy, so the CLI builds its help from it while
`export` (torch) loads on first use.
"""

from typing import Any

from .targets import ALIASES, PRECISIONS, TARGETS

__all__ = ["export", "explain_int8", "TARGETS", "ALIASES", "PRECISIONS"]


def __getattr__(name: str) -> Any:
    if name == "export":
        from .api import export

        return export
    if name == "explain_int8":  # int8 with the per-layer sensitivity report (sensitivity.py)
        from .sensitivity import explain_int8

        return explain_int8
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
