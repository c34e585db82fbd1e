"""`load(bundle) -> Predictor`: verified bundle + backend + the shared numpy pre/post-processing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .backends import open_backend
from .images import load_gray
from .manifest import BundleError, inspect_bundle
from .measure import parse_spacing
from .preprocess import model_input
from .results import output_as_float, postprocess


class Predictor:
    """Runs one bundle: `predictor(image)` for one frame, `predictor.batch(images)` for many."""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], backend: Any):
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.backend = backend
        self.task: str = manifest["task"]
        self.labels: list[str] = list(manifest["labels"])
        self.digest: str | None = None  # the verified bundle digest (bundle.sha256), set by load()
        self.selftest: Any = None  # the passed SelfTestReport (selftest.py) when loaded with verify=True
        self._check_input()
        self._check_quantization()

    def _check_input(self) -> None:
        """The model file's input shape and dtype must be the manifest's, or pre-processing would feed it wrongly."""
        if not hasattr(self.backend, "input_spec"):
            return
        shape, dtype = self.backend.input_spec()
        declared = self.manifest["inputs"][0]
        fixed = [d if isinstance(d, int) else None for d in declared["shape"]]
        mismatched = [i for i, (a, b) in enumerate(zip(shape, fixed, strict=False)) if a != b and i > 0]
        if dtype != declared["dtype"] or len(shape) != len(fixed) or mismatched:
            raise BundleError(
                f"{self.bundle_dir}: the model file takes {dtype} {shape}, but the manifest declares "
                f"{declared['dtype']} {declared['shape']}; the manifest does not describe this model: re-export the "
                "bundle")

    def _check_quantization(self) -> None:
        """An integer-I/O model's own scale/zero-point must match the manifest, or inputs would be silently wrong."""
        if not hasattr(self.backend, "quantization"):
            return
        actual = self.backend.quantization()
        for key, spec in (("input", self.manifest["inputs"][0]), ("output", self.manifest["outputs"][0])):
            q = spec.get("quantization")
            if q and spec["dtype"] in ("int8", "uint8"):
                scale, zero = actual[key]
                if not np.isclose(scale, q["scale"], rtol=1e-6) or int(zero) != int(q["zero_point"]):
                    raise BundleError(
                        f"{self.bundle_dir}: model {key} quantization ({scale}, {zero}) differs from the manifest "
                        f"({q['scale']}, {q['zero_point']})"
                    )

    def preprocess(self, images: list[Any]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Images -> (model input batch, original sizes)."""
        grays = [load_gray(im) for im in images]
        return model_input(grays, self.manifest), [g.shape for g in grays]

    def run_model(self, x: np.ndarray) -> np.ndarray:
        """The bare backend call on an already pre-processed batch (split when the model's batch is fixed)."""
        fixed = getattr(self.backend, "fixed_batch", None)
        if fixed is None or x.shape[0] == fixed:
            return self.backend.run(x)
        if fixed != 1:
            raise BundleError(f"model has a fixed batch of {fixed}; cannot run a batch of {x.shape[0]}")
        return np.concatenate([self.backend.run(x[i:i + 1]) for i in range(x.shape[0])])

    def raw_outputs(self, images: list[Any]) -> np.ndarray:
        """Float outputs (dequantised, channels first) for images: what parity compares."""
        x, _ = self.preprocess(images)
        return output_as_float(self.run_model(x), self.manifest)

    def spacing(self, pixel_spacing_mm: Any, name: str = "pixel_spacing_mm") -> tuple[float, float] | None:
        """Validate a per-call pixel spacing (mm, one number or (row, col)) against what this bundle can measure."""
        spacing = parse_spacing(pixel_spacing_mm, name)
        if spacing is None:
            return None
        if self.task != "segmentation":
            raise ConfigError(f"{name}: {self.manifest['name']} is a {self.task} model; measurements "
                              "apply to segmentation bundles only, drop the spacing")
        if not self.manifest.get("measurements"):
            raise ConfigError(f"{name}: bundle {self.bundle_dir} lists no measurements (manifest "
                              "`measurements` empty or absent), so nothing would use the spacing; re-export it with "
                              "pocus-export --measurements area,ellipse, or drop the spacing")
        return spacing

    def batch(self, images: list[Any], pixel_spacing_mm: Any = None) -> list:
        """Typed results (SegmentationResult, ClassificationResult or EmbeddingResult) for several images;
        `pixel_spacing_mm` (mm per pixel of the images as given, one number or (row, col)) puts mm into the
        measurements the manifest lists (else they are in pixels)."""
        spacing = self.spacing(pixel_spacing_mm)
        if len(images) == 0:
            return []
        start = time.perf_counter()
        x, sizes = self.preprocess(list(images))
        out = output_as_float(self.run_model(x), self.manifest)
        results = [postprocess(out[i], self.manifest, sizes[i], spacing) for i in range(len(sizes))]
        per_image = (time.perf_counter() - start) * 1000 / len(results)
        for r in results:
            r.latency_ms = per_image
        return results

    def __call__(self, image: Any, pixel_spacing_mm: Any = None):
        return self.batch([image], pixel_spacing_mm)[0]

    def __repr__(self) -> str:
        m = self.manifest
        return f"Predictor({m['name']}: {m['task']}, {m['target']} {m['precision']}, backend={self.backend.name})"


def load(bundle_dir: str | Path, backend: str | None = None, threads: int | None = None,
         providers: list[str] | None = None, trusted_keys: list[str | Path] | None = None, verify: bool = False,
         **options: Any) -> Predictor:
    """Verify a bundle (schema, bundle digest, sha256 of every file) and open it on a backend (default: the
    target's own). With `trusted_keys` (Ed25519 public key PEM files) an unsigned or wrongly signed bundle is refused.
    `verify=True` also runs the bundle's reference vectors on this backend (the self-test, selftest.py) and raises
    SelfTestError, naming the frame and the difference, when the model does not reproduce them.
    """
    manifest, seal = inspect_bundle(Path(bundle_dir), trusted_keys)
    if threads is not None and threads < 1:
        raise BundleError(f"threads must be >= 1, got {threads}")
    engine = open_backend(backend, Path(bundle_dir), manifest, threads=threads, providers=providers, **options)
    predictor = Predictor(Path(bundle_dir), manifest, engine)
    predictor.digest = seal.digest
    if verify:
        from .selftest import require_selftest

        predictor.selftest = require_selftest(predictor)
    return predictor
