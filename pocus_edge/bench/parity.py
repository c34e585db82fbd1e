"""`pocus bench parity`: each bundle vs PyTorch fp32 (agreement) and each vs ground truth, on the same frames.

Answers "how much accuracy does this precision/backend cost": the reference checkpoint's own ground-truth
metrics sit beside every bundle's, with the difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import ConfigError
from ..io import nan_to_null
from .rows import ParityRow, finite_or_none


def bench_parity(bundles: list[Path], reference: Path, data: Path, split: str = "test", seed: int = 0,
                 threads: int | None = None) -> list[ParityRow]:
    """One row per bundle: agreement metrics, ground-truth metrics, and the reference's ground-truth metrics."""
    from ..export.parity import compare
    from ..export.source import resolve_model
    from ..finetune.data import load_pair, read_samples, split_samples
    from ..finetune.evaluate import evaluate_outputs
    from ..models.inference import frame_outputs
    from ..runtime import load
    from ..runtime.images import to_gray01
    from ..runtime.postprocess import postprocessing_for
    from ..runtime.preprocess import normalization

    net, spec = resolve_model(str(reference), None)
    if spec.task == "embedding":
        raise ConfigError("bench parity needs a task checkpoint (segmentation or classification) as --reference")
    samples = read_samples(data, spec.task)
    if split != "all":
        samples = split_samples(samples, seed, spec.task == "classification")[split]
    pre = normalization(spec.image_size, spec.mean, spec.std)

    def torch_predict(grays: list[np.ndarray]) -> np.ndarray:
        return frame_outputs(net, grays, pre)

    post = postprocessing_for(spec.task, spec.labels, spec.threshold)  # the card's threshold
    reference_gt = _summary(evaluate_outputs(spec.task, samples, spec.labels, torch_predict, post=post))
    grays = [to_gray01(load_pair(s)[0]) for s in samples]
    ref_out = torch_predict(grays)
    rows = []
    for bundle in bundles:
        predictor = load(bundle, threads=threads)
        m = predictor.manifest
        if m["task"] != spec.task:
            raise ConfigError(f"{bundle}: a {m['task']} bundle cannot be compared with a {spec.task} reference")
        out = predictor.raw_outputs(grays)
        gt = _summary(evaluate_outputs(spec.task, samples, spec.labels, predictor.raw_outputs,
                                       post=m["postprocessing"]))
        key = "dice" if spec.task == "segmentation" else "accuracy"
        change = finite_or_none(gt[key] - reference_gt[key])
        rows.append(ParityRow(bundle=str(bundle), target=m["target"], precision=m["precision"],
                              backend=predictor.backend.name, images=len(samples), split=split,
                              agreement=_finite(compare(spec.task, ref_out, out, post, m["postprocessing"])),
                              ground_truth=gt, reference_ground_truth=reference_gt, **{f"{key}_change": change}))
    return rows


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics with undefined values (NaN/inf) as null: rows hold no NaN."""
    return cast(dict[str, Any], nan_to_null(metrics))


def _summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The ground-truth summary of an evaluation (hd95 of an image whose masks are empty: null)."""
    return _finite(evaluation["summary"])
