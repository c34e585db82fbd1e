"""Run a predictor over a cine loop (an iterable of frames or a video file), frame by frame.

Each result carries its own latency. `smoothing` in [0, 0.95] blends each frame's mask probabilities with
the previous blend (exponential moving average) before thresholding, which steadies masks on live
scanning at the cost of lag (above 0.95 a mask trails the probe by tens of frames, so it is refused);
0 disables it. A video from which no frame can be decoded is an error, never an empty result list.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, PocusError
from .postprocess import to_mask
from .results import SegmentationResult

MAX_SMOOTHING = 0.95


def check_smoothing(value: float, name: str = "smoothing") -> float:
    """`value` if it lies in [0, MAX_SMOOTHING], else a ConfigError naming `name`."""
    if not 0.0 <= value <= MAX_SMOOTHING:
        raise ConfigError(
            f"{name} {value}: must lie in [0, {MAX_SMOOTHING}] (0 = off; higher values make the mask lag the "
            "scan by many frames)"
        )
    return float(value)


def _open_capture(path: str | Path) -> Any:
    """An opened cv2.VideoCapture for an existing file, or a PocusError saying why not."""
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
    return capture


def video_fps(path: str | Path, default: float = 25.0) -> float:
    """The frame rate a video file declares (`default` when it declares none)."""
    capture = _open_capture(path)
    import cv2

    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    return fps if np.isfinite(fps) and 0 < fps <= 1000 else default


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file into gray uint8 frames (needs OpenCV: the `video` extra); no frame at all is an error."""
    capture = _open_capture(path)
    import cv2

    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    finally:
        capture.release()
    if count == 0:
        raise PocusError(f"{path}: no frame could be decoded (an empty video, or a codec OpenCV cannot read)")


def stream(predictor: Any, frames: Iterable[Any] | str | Path, smoothing: float = 0.0) -> Iterator[Any]:
    """Yield one result per frame, with `latency_ms` measured per frame (pre + model + post)."""
    check_smoothing(smoothing)
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
                result.mask = to_mask(probs, threshold)
            previous = result.probabilities
        result.latency_ms = (time.perf_counter() - start) * 1000
        yield result


class OverlayVideo:
    """RGB overlay frames -> an mp4 (OpenCV, mp4v) at `fps`. The encoder needs even sizes, so an odd height or
    width is padded with one black row/column at the bottom/right (`padding`; pixel coordinates are kept).
    After close(), `error` says why no playable file was written (no encoder, or the file read back with
    another frame count or size); the file is then removed."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.padding = (0, 0)
        self.error: str | None = None
        self._writer: Any = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self.error is not None:
            return
        if self._writer is None:
            self.padding = (rgb.shape[0] % 2, rgb.shape[1] % 2)
            self.size = (rgb.shape[0] + self.padding[0], rgb.shape[1] + self.padding[1])
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (self.size[1], self.size[0]))
            if not self._writer.isOpened():
                self.error, self._writer = "OpenCV could not open an mp4v video writer", None
                return
        padded = np.pad(rgb, ((0, self.padding[0]), (0, self.padding[1]), (0, 0)))
        self._writer.write(cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        import cv2

        if self._writer is not None:
            self._writer.release()
            self._writer = None
            capture = cv2.VideoCapture(str(self.path))
            written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
            ok, first = capture.read() if capture.isOpened() else (False, None)
            capture.release()
            got = first.shape[:2] if ok and first is not None else None
            if written != self.frames or got != self.size:
                self.error = (f"the overlay video read back with {written} of {self.frames} frames "
                              f"(size {got}, expected {self.size})")
        if self.error is not None:
            self.path.unlink(missing_ok=True)
