"""`pocus eval CHECKPOINT|BUNDLE --data DIR`: ground-truth metrics for a checkpoint or an exported bundle.

Bundles run through the runtime (so a quantised model is judged on ground truth, not only on agreement
with fp32); checkpoints run in PyTorch. Both use the same split rule as `pocus finetune` (same seed, same
test images) unless `--split all`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..distill.progress import ItemProgress
from ..errors import ConfigError, DataError
from ..io import atomic_write_json, nan_to_null
from ..runtime.postprocess import postprocessing_for
from ..runtime.preprocess import normalization
from .data import read_samples, split_samples
from .evaluate import evaluate_outputs
from .measure_eval import check_measure, circumference_summary, read_truth


def _predictor(model: Path, threads: int | None):
    """(predict(grays) -> raw outputs, task, labels, description, postprocessing) for a bundle folder or a checkpoint
    (a checkpoint's postprocessing is the block its bundle would get, with its card's threshold)."""
    if Path(model).is_dir() and (Path(model) / "manifest.json").is_file():
        from ..runtime import load

        predictor = load(model, threads=threads)
        m = predictor.manifest
        if m["task"] == "embedding":
            raise ConfigError(f"{model}: an embedding bundle has no ground truth to compare with")
        return (predictor.raw_outputs, m["task"], list(m["labels"]), f"bundle {m['target']} {m['precision']}",
                m["postprocessing"])
    from ..export.source import resolve_model
    from ..models.inference import frame_outputs

    net, spec = resolve_model(str(model), None)
    if spec.task == "embedding":
        raise ConfigError(f"{model}: an encoder has no task head; fine-tune it first")
    pre = normalization(spec.image_size, spec.mean, spec.std)
    post = postprocessing_for(spec.task, spec.labels, spec.threshold)
    return lambda grays: frame_outputs(net, grays, pre), spec.task, spec.labels, "pytorch fp32 checkpoint", post


def run_eval(model: Path, data: Path, split: str, seed: int, threads: int | None,
             out: Path | None, measure: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Metrics of MODEL on DATA's `split` (test by default); writes OUT/eval.json and per-image CSV when asked.

    `measure="ellipse"` adds the head-circumference error against manifest.csv per split (measure_eval.py);
    `progress` shows a bar over the images with ETA on stderr."""
    if split not in ("test", "val", "train", "all"):
        raise ConfigError(f"--split {split!r}: choose test, val, train or all")
    if measure is not None:
        check_measure(measure)
    predict, task, labels, what, post = _predictor(model, threads)
    if measure is not None and task != "segmentation":
        raise ConfigError(f"--measure {measure}: {model} is a {task} model; measurements need a segmentation model")
    samples = read_samples(data, task)
    splits = _splits(samples, seed, task, split, measure)
    chosen = samples if split == "all" else splits[split]
    truth = read_truth(data, chosen, measure) if measure is not None else None
    with ItemProgress(len(chosen), f"eval {split}", enabled=progress) as bar:
        result = evaluate_outputs(task, chosen, labels, _counted(predict, bar), stage=f"eval of {model}",
                                  truth=truth, post=post)
    report = {"model": str(model), "evaluated_as": what, "data": str(data), "split": split, "seed": seed,
              "task": task, "metrics": nan_to_null(result["summary"])}  # undefined (NaN) metrics -> null
    if truth is not None:
        report["head_circumference"] = _per_split(result["per_image"], splits, split)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "eval.json", {**report, "per_image": nan_to_null(result["per_image"])})
    return report


def _counted(predict, bar: ItemProgress):
    """`predict` that advances the progress bar by the frames of each call."""
    def run(grays):
        outputs = predict(grays)
        bar.advance(len(grays))
        return outputs

    return run


def _splits(samples: list[Any], seed: int, task: str, split: str, measure: str | None) -> dict[str, list[Any]]:
    """The finetune splits; for `--split all` only when measuring (to tag rows), and none if the data is too small."""
    if split != "all":
        return split_samples(samples, seed, task == "classification")
    if measure is None:
        return {}
    try:
        return split_samples(samples, seed, task == "classification")
    except DataError:
        return {}


def _per_split(rows: list[dict[str, Any]], splits: dict[str, list[Any]], split: str) -> dict[str, Any]:
    """Head-circumference summary per split (each row tagged with its split); `all` also gets its own."""
    where = {s.image: name for name, members in splits.items() for s in members}
    for row in rows:
        row["split"] = where.get(row["image"], "all")
    names = [split] if split != "all" else [*splits, "all"]
    return {name: circumference_summary([r for r in rows if name in ("all", r["split"])]) for name in names}
