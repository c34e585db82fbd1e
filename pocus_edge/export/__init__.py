"""Export layer: MODEL -> self-describing, verified bundle for onnx, tflite, coreml or tensorrt.

`export(model, target, precision, out, ...)` is the Python API; `pocus-export` / `pocus export` call it.
"""

from .api import export
from .targets import ALIASES, PRECISIONS, TARGETS

__all__ = ["export", "TARGETS", "ALIASES", "PRECISIONS"]
