"""`pocus finetune seg|cls`: train a U-Net or classifier on a (distilled or random) ResNet encoder, pick the
best epoch on validation, report test metrics, and write a checkpoint `pocus-export` takes as is.

Loss: segmentation BCE + soft Dice; classification cross-entropy. Optimiser: AdamW (lr 3e-4, or 1e-3
for the linear probe; weight decay 1e-4) with cosine decay. Augmentation: random crop (70-100 % of
the area) and horizontal flip, never a vertical flip. A ViT-LoRA teacher (--architecture vit_base_patch16_dinov3
--backbone-weights FILE) trains only its adapters and head with TS-KD's settings: 0.2 x BCE/CE + 0.8 x Dice, AdamW
lr 5e-3, 250 linear warm-up steps before the cosine decay. Evaluation uses the runtime's own numpy
pre/post-processing, so the reported metrics are those a deployed bundle reproduces.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..allocator import keep_freed_memory
from ..distill.progress import TrainProgress, progress_enabled
from ..errors import ConfigError, DataError
from ..io import atomic_write_json, atomic_write_text, nan_to_null
from ..limits import check, check_out
from ..models import vit_lora
from ..runtime.preprocess import normalization, normalized_chw, resize_bilinear
from ..task_names import TRAINABLE_TASKS
from .data import Sample, check_decodable, label_fraction, load_pair, mask_label, read_samples, split_samples
from .evaluate import evaluate_model
from .model import build_finetune_model, resolve_architecture, save_task_model

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    task: str
    data: str
    out: str
    encoder: str = "random"
    architecture: str | None = None  # None: the --encoder card's, else resnet50
    decoder_channels: list[int] | None = None  # None: the architecture's default (slim for phone-class encoders)
    linear_probe: bool = False
    label_fraction: float = 1.0
    epochs: int = 20
    image_size: int = 256
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float = 1e-4
    seed: int = 0
    split_seed: int | None = None  # None: --seed; a fixed split seed keeps one test set across training seeds
    threads: int = 0
    max_steps_per_epoch: int = 0
    backbone_weights: str | None = None  # ViT-LoRA architectures: a local DINOv3/DINOv2 file, or random (smoke tests)
    backbone_kwargs: dict = field(default_factory=dict)  # extra timm kwargs of the ViT (tests: a tiny one)
    lora_rank: int | None = None  # None: 8 (TS-KD)
    lora_alpha: float | None = None  # None: 2 x rank
    warmup_steps: int | None = None  # None: 250 for a ViT-LoRA model, else 0
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse bad options before any data is read or OUT is made (limits.BOUNDS holds the ranges)."""
        if self.task not in TRAINABLE_TASKS.values():
            raise ConfigError(f"task {self.task!r}: use seg or cls")
        for name, value in (("image_size", self.image_size), ("epochs", self.epochs), ("threads", self.threads),
                            ("batch_size", self.batch_size), ("label_fraction", self.label_fraction)):
            check(name, value)
        check("steps", self.max_steps_per_epoch, "--max-steps-per-epoch")
        if self.lr is not None:
            check("learning_rate", self.lr, "--lr")
        if not Path(self.data).is_dir():
            raise DataError(f"--data {self.data}: no such folder")
        check_out(self.out)


def _augment(image: np.ndarray, mask: np.ndarray | None, size: int, rng: np.random.Generator):
    """Random crop (70-100 % area, aspect 3/4-4/3) + horizontal flip; returns float image [0,1] and mask."""
    h, w = image.shape
    area = rng.uniform(0.7, 1.0) * h * w
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch, cw = min(h, int(round(np.sqrt(area / ratio)))), min(w, int(round(np.sqrt(area * ratio))))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    img = image[top:top + ch, left:left + cw].astype(np.float32) / 255
    msk = None if mask is None else mask[top:top + ch, left:left + cw].astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
        msk = None if msk is None else msk[:, ::-1]
    img = np.ascontiguousarray(img)
    out_mask = None if msk is None else (resize_bilinear(np.ascontiguousarray(msk), size, size) >= 0.5)
    return img, out_mask


def _loss(task: str, logits: torch.Tensor, target: torch.Tensor, weights: tuple[float, float] = (1.0, 1.0)
          ) -> torch.Tensor:
    """Classification: cross-entropy; segmentation: weights[0] x BCE + weights[1] x soft Dice."""
    if task == "classification":
        return F.cross_entropy(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probs = torch.sigmoid(logits)
    inter = (probs * target).sum(dim=(1, 2, 3))
    soft_dice = 1 - (2 * inter + 1) / (probs.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return weights[0] * bce + weights[1] * soft_dice.mean()


def _schedule(total: int, warmup: int):
    """LR factor per step: linear warm-up over `warmup` steps, then cosine decay over the rest (0: plain cosine)."""
    rest = max(1, total - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * min(step - warmup, rest) / rest))

    return factor


def _vit_options(cfg: FinetuneConfig) -> vit_lora.ViTLoRAOptions | None:
    """The ViT-LoRA settings (None for a CNN); refuses --backbone-weights on a CNN and a ViT without it."""
    if not vit_lora.is_vit_arch(cfg.architecture):
        given = [flag for flag, value in (("--backbone-weights", cfg.backbone_weights), ("--lora-rank", cfg.lora_rank),
                                          ("--lora-alpha", cfg.lora_alpha)) if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: for the ViT-LoRA architectures only (e.g. "
                              f"{vit_lora.VIT_ARCHITECTURES[0]}), not {cfg.architecture}; drop it")
        return None
    if not cfg.backbone_weights:
        raise ConfigError(f"--architecture {cfg.architecture} needs --backbone-weights FILE (a local DINOv3/DINOv2 "
                          "weights file; random for smoke tests)")
    cfg.lora_rank = 8 if cfg.lora_rank is None else cfg.lora_rank
    options = vit_lora.ViTLoRAOptions(cfg.backbone_weights, cfg.image_size, cfg.lora_rank, cfg.lora_alpha,
                                      dict(cfg.backbone_kwargs))
    cfg.lora_alpha = options.lora().alpha
    options.lora().check()  # rank <= the ViT's width is checked when it is built
    if cfg.warmup_steps is not None:
        check("warmup", cfg.warmup_steps, "warmup_steps")
    if cfg.backbone_weights == vit_lora.RANDOM_WEIGHTS:
        log.warning("--backbone-weights random: the backbone is untrained; the result is for smoke tests only")
    return options


def _batches(cfg: FinetuneConfig, data: list[tuple], labels: list[str], rng: np.random.Generator):
    pre = getattr(cfg, "pre", None) or normalization(cfg.image_size)  # QAT passes its card's normalisation
    order = rng.permutation(len(data))
    for start in range(0, len(order) - cfg.batch_size + 1 if len(order) >= cfg.batch_size else 1, cfg.batch_size):
        xs, ys = [], []
        for i in order[start:start + cfg.batch_size]:
            image, mask, label = data[i]
            img, msk = _augment(image, mask, cfg.image_size, rng)
            xs.append(normalized_chw(img, pre))
            ys.append(msk[None].astype(np.float32) if cfg.task == "segmentation" else labels.index(label))
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys)) if cfg.task == "segmentation" else torch.tensor(ys)
        yield x, y


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train, select on validation, test, and write OUT (checkpoint, metrics, splits, config)."""
    cfg.validate()
    cfg.architecture = resolve_architecture(cfg.encoder, cfg.architecture)
    vit = _vit_options(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    allocator = keep_freed_memory()  # each step reuses the last one's memory instead of faulting it in again
    torch.manual_seed(cfg.seed)
    stratify = cfg.task == "classification"
    samples = read_samples(Path(cfg.data), cfg.task)
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    splits = split_samples(samples, split_seed, stratify)
    train = label_fraction(splits["train"], cfg.label_fraction, split_seed, stratify)
    labels = sorted({s.label for s in samples}) if stratify else ["background", mask_label(samples)]
    check_decodable(samples)  # a truncated image or mask fails now, not after training
    model, init = build_finetune_model(cfg.task, cfg.architecture, cfg.encoder, len(labels) if stratify else 1,
                                       cfg.linear_probe, tuple(cfg.decoder_channels or ()) or None, vit)
    cfg.decoder_channels = init["decoder_channels"]
    out = Path(cfg.out)  # made only now: a failed check above leaves nothing behind
    out.mkdir(parents=True, exist_ok=True)
    _write_splits(out / "splits.csv", splits, train)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr or (vit_lora.LEARNING_RATE if vit else 1e-3 if cfg.linear_probe else 3e-4)
    loss_weights = vit_lora.LOSS_WEIGHTS if vit else (1.0, 1.0)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    data = [(*load_pair(s), s.label) for s in train]
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    if cfg.warmup_steps is None:
        cfg.warmup_steps = vit_lora.WARMUP_STEPS if vit else 0
    if 0 < total <= cfg.warmup_steps:
        log.warning("%d warm-up steps >= %d training steps: the learning rate never reaches %g", cfg.warmup_steps,
                    total, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, cfg.warmup_steps))
    rng = np.random.default_rng(cfg.seed)
    key = "dice" if cfg.task == "segmentation" else "macro_f1"
    best, best_state, history = -1.0, None, []
    start = time.time()
    with TrainProgress(total, 0, progress_enabled(log), label="finetune") as progress:  # a bar per step, with ETA
        for epoch in range(cfg.epochs):
            model.train_mode()
            losses = []
            what = f"finetune epoch {epoch + 1}/{cfg.epochs}" + (f" (val {key} {best:.3f})" if best >= 0 else "")
            t_step = time.perf_counter()
            for step, (x, y) in enumerate(_batches(cfg, data, labels, rng)):
                if step >= steps_per_epoch:
                    break
                loss = _loss(cfg.task, model(x), y, loss_weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                now = time.perf_counter()
                progress.update(epoch * steps_per_epoch + step + 1, losses[-1], len(x) / max(now - t_step, 1e-9),
                                what)
                t_step = now
            val = evaluate_model(model, splits["val"], cfg.task, labels, cfg.image_size)
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in
                                                                                  val["summary"].items()}})
            if not progress.live:  # the bar shows it on a terminal; logs (files, pipes) keep one line per epoch
                log.info("epoch %d: loss %.4f, val %s %.4f", epoch + 1, np.mean(losses), key, val["summary"][key])
            if val["summary"][key] > best:
                best = val["summary"][key]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    val = evaluate_model(model, splits["val"], cfg.task, labels, cfg.image_size)
    test = evaluate_model(model, splits["test"], cfg.task, labels, cfg.image_size)
    card = save_task_model(out / "model.safetensors", model.net, cfg, labels, init, cfg.extra)
    _write_per_image(out / "per_image.csv", test["per_image"])
    summary = {"task": cfg.task, "architecture": cfg.architecture, "encoder": init["origin"],
               "decoder_channels": init["decoder_channels"], "smoke_test_only": init["smoke_test_only"],
               "linear_probe": cfg.linear_probe,
               "label_fraction": cfg.label_fraction, "train_images": len(train), "val_images": len(splits["val"]),
               "test_images": len(splits["test"]), "epochs": cfg.epochs, "image_size": cfg.image_size,
               "wall_time_s": round(time.time() - start, 1), "val": val["summary"], "test": test["summary"],
               "history": history, "weights_sha256": card["weights_sha256"], "allocator": allocator}
    summary = nan_to_null(summary)  # undefined metrics (HD95 of an empty mask) are null, never a bare NaN
    atomic_write_json(out / "metrics.json", summary)
    import yaml

    atomic_write_text(out / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
    return summary


def _write_splits(path: Path, splits: dict[str, list[Sample]], train_used: list[Sample]) -> None:
    used = {s.image for s in train_used}
    lines = ["image,split,group,label,used_for_training"]
    for name, items in splits.items():
        for s in items:
            lines.append(f"{s.image},{name},{s.group},{s.label or ''},{int(s.image in used)}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _write_per_image(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
