"""Run a predictor over a cine loop (an iterable of frames or a video file), frame by frame.

Each result carries its own latency. `smoothing` in [0, 1) blends each frame's mask probabilities with
the previous blend (exponential moving average) before thresholding, which steadies masks on live
scanning at the cost of lag; 0 disables it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PocusError
from .results import SegmentationResult


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file into gray uint8 frames (needs OpenCV: the `video` extra)."""
    try:
        import cv2
    except ImportError:
        raise PocusError("reading video needs OpenCV: pip install 'pocus-edge[video]'")
    path = Path(path)
    if not path.is_file():
        raise PocusError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise PocusError(f"{path}: OpenCV cannot open this video")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    finally:
        capture.release()


def stream(predictor: Any, frames: Iterable[Any] | str | Path, smoothing: float = 0.0) -> Iterator[Any]:
    """Yield one result per frame, with `latency_ms` measured per frame (pre + model + post)."""
    if not 0.0 <= smoothing < 1.0:
        raise PocusError(f"smoothing {smoothing} must lie in [0, 1)")
    source = video_frames(frames) if isinstance(frames, (str, Path)) else frames
    previous: np.ndarray | None = None
    threshold = predictor.manifest["postprocessing"]["threshold"]
    for frame in source:
        start = time.perf_counter()
        result = predictor(frame)
        if smoothing and isinstance(result, SegmentationResult):
            if previous is not None and previous.shape == result.probabilities.shape:
                result.probabilities = smoothing * previous + (1 - smoothing) * result.probabilities
                probs = result.probabilities
                result.mask = ((probs[0] >= threshold) if probs.shape[0] == 1 else probs.argmax(0)).astype(np.uint8)
            previous = result.probabilities
        result.latency_ms = (time.perf_counter() - start) * 1000
        yield result
