"""Torch-free runtime: `load(bundle_dir) -> Predictor` over ONNX Runtime, TFLite/LiteRT, TensorRT or Core ML.

Needs only numpy, pillow and the backend package; pre/post-processing is implemented once, in numpy,
from the bundle's manifest, and is identical for every backend.
"""

from .images import InputError
from .manifest import BundleError, read_manifest, verify_bundle
from .predictor import Predictor, load
from .results import ClassificationResult, EmbeddingResult, SegmentationResult
from .stream import stream, video_frames

__all__ = ["load", "Predictor", "SegmentationResult", "ClassificationResult", "EmbeddingResult", "BundleError",
           "InputError", "read_manifest", "verify_bundle", "stream", "video_frames"]
