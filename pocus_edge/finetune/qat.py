"""`pocus qat CHECKPOINT --data DIR`: a short quantization-aware fine-tune of a trained `pocus finetune` checkpoint.

Why a separate command (not `finetune --qat`): QAT is what a user reaches for after an int8 export failed parity;
it starts from that trained checkpoint, keeps its splits (split seed from the config.yaml beside it, checked
against its splits.csv) and its architecture, and trains a few epochs, where finetune trains from an encoder for
many.

How (PT2E QAT): BatchNorm is folded into the convolutions first (eval statistics, frozen: what every exporter
does before quantising), the folded model is captured with torch.export and prepared with torchao's
`prepare_qat_pt2e` and litert-torch's PT2EQuantizer config, the one the TFLite int8 exporter uses:
int8 per-channel symmetric weights, int8 per-tensor affine activations (ONNX QDQ quantises the same tensors: int8
per-channel symmetric weights, 8-bit asymmetric activations). litert-torch's QAT-only conv+bn annotators fail on
torch 2.14 (they torch.export a function); with BatchNorm folded they have nothing to match, so they are skipped.
Training: the fine-tune's loss and augmentation, AdamW, cosine decay; the epoch whose fake-quantised model scores
best on validation is kept.

What is saved: the float weights QAT ends with (fake quantisation removed), written back into the checkpoint's
own architecture with each BatchNorm set to the identity plus the folded bias, so `pocus-export` takes it as is.
"Its own float model" is this checkpoint. Export recalibrates: pocus-export computes activation ranges on
--calib-data exactly as for any checkpoint (the QAT-learned ranges are not carried: ONNX Runtime and TFLite
each calibrate their own tensors, and the bundle's calibration record stays true). metrics.json and
qat_report.md hold the before/after table on the test split: float and simulated int8 (the TFLite exporter's
PT2E quantisation, recalibrated on training frames, run in PyTorch) before and after, and each int8 model's mask
Dice (or top-1) agreement with its own float model.
"""

from __future__ import annotations

import copy
import csv
import itertools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..allocator import keep_freed_memory
from ..errors import CheckpointError, ConfigError, DataError
from ..io import atomic_write_json, atomic_write_text, nan_to_null
from ..limits import check, check_out
from .data import label_fraction, load_pair, read_samples, split_samples

log = logging.getLogger(__name__)
CALIB_FRAMES = 32  # training frames the simulated PTQ int8 is calibrated on
START_BATCHES = 4  # training batches that set the fake-quant ranges of the starting model (epoch 0)
FOLD_TOLERANCE = 1e-3  # relative: folded / unfolded model vs the original on one input


@dataclass(frozen=True)
class Evaluation:
    """How the checkpoint's outputs are judged: its card's pre-processing (size, mean, std) and post-processing
    (activation, threshold), the runtime's rules (runtime/preprocess.py, runtime/postprocess.py)."""

    task: str
    labels: list[str]
    pre: dict[str, Any]
    post: dict[str, Any]


def card_evaluation(card: dict, where: Path | str) -> Evaluation:
    """The Evaluation a checkpoint's card prescribes; CheckpointError when a segmentation card has no threshold."""
    from ..models.encoder_io import card_threshold
    from ..runtime.postprocess import postprocessing_for
    from ..runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalization

    norm = card.get("normalization") or {}
    task, labels = card["task"], list(card["labels"])
    pre = normalization(int(card["input_size"][0]), norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD))
    return Evaluation(task, labels, pre, postprocessing_for(task, labels, card_threshold(card, where)))


def evaluate(evaluation: Evaluation, model, samples) -> dict[str, Any]:
    """Ground-truth metrics (summary) of a float, fake-quantised or simulated-int8 model on `samples`."""
    from ..models.inference import frame_outputs
    from .evaluate import evaluate_outputs

    if not samples:
        return {"dice": float("nan"), "macro_f1": float("nan")}
    return evaluate_outputs(evaluation.task, samples, evaluation.labels,
                            lambda grays: frame_outputs(model, grays, evaluation.pre), "qat evaluation",
                            post=evaluation.post)["summary"]


@dataclass
class QATConfig:
    checkpoint: str
    data: str
    out: str
    epochs: int = 3
    batch_size: int = 8
    lr: float = 5e-5
    seed: int | None = None  # None: the fine-tune's (config.yaml beside the checkpoint), else 0
    threads: int = 0
    max_steps_per_epoch: int = 0

    def validate(self) -> None:
        for name, value in (("epochs", self.epochs), ("threads", self.threads), ("batch_size", self.batch_size)):
            check(name, value)
        check("steps", self.max_steps_per_epoch, "--max-steps-per-epoch")
        check("learning_rate", self.lr, "--lr")
        if not Path(self.data).is_dir():
            raise DataError(f"--data {self.data}: no such folder")
        check_out(self.out)


def quantizer(qat: bool):
    """litert-torch's PT2E quantizer with the TFLite int8 exporter's config (QAT: fake-quantise instead of observe)."""
    from litert_torch.quantize import pt2e_quantizer

    class FoldedBNQuantizer(pt2e_quantizer.PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list[str] = []  # conv+bn patterns: BatchNorm is folded before QAT (module docstring)

    return FoldedBNQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True,
                                                                                          is_qat=qat))


def captured(net: nn.Module, size: int) -> torch.fx.GraphModule:
    """torch.export of `net` at `size` px with any batch size (training and evaluation batches differ)."""
    batch = ({0: torch.export.Dim.DYNAMIC},)
    return torch.export.export(net, (torch.rand(2, 3, size, size),), dynamic_shapes=batch).module()


def conv_bn_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """(convolution, the BatchNorm right after it) by module order; checked numerically by fold_batchnorm."""
    pairs, prev = [], None
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            prev = (name, module)
        elif isinstance(module, nn.BatchNorm2d):
            if prev is None or prev[1].out_channels != module.num_features:
                raise ConfigError(f"QAT folds each BatchNorm into the convolution before it; {name} follows no "
                                  "matching convolution in this architecture")
            pairs.append((prev[0], name))
            prev = None
    return pairs


@torch.no_grad()
def fold_batchnorm(net: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of `net` (eval) with every BatchNorm folded into a biased convolution, and the pairs folded."""
    folded = copy.deepcopy(net).eval()
    pairs = conv_bn_pairs(folded)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, True, conv.padding_mode)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
        folded.set_submodule(conv_name, fused)
        folded.set_submodule(bn_name, _what_follows_the_norm(bn))
    _check_same(net.eval(), folded, example, "folding BatchNorm into the convolutions")
    return folded, pairs


def _what_follows_the_norm(bn: nn.Module) -> nn.Module:
    """What stays of a folded BatchNorm: nothing, or for timm's BatchNormAct2d (MobileNet/EfficientNet encoders) its
    dropout and activation, which run after the normalisation inside the same module."""
    if hasattr(bn, "act") and hasattr(bn, "drop"):
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


@torch.no_grad()
def unfold_into(fresh: nn.Module, trained: dict[str, torch.Tensor], pairs: list[tuple[str, str]]) -> nn.Module:
    """`fresh` (the checkpoint's architecture) holding the folded weights, each BatchNorm the identity + bias."""
    state = fresh.state_dict()
    for key in state:
        if key in trained:
            state[key] = trained[key].detach().clone()
    for conv_name, bn_name in pairs:
        bias = trained[f"{conv_name}.bias"].detach().clone()
        if f"{conv_name}.bias" in state:
            state[f"{conv_name}.bias"], bias = bias, torch.zeros_like(bias)
        eps = fresh.get_submodule(bn_name).eps
        state[f"{bn_name}.weight"] = torch.ones_like(bias)
        state[f"{bn_name}.bias"] = bias
        state[f"{bn_name}.running_mean"] = torch.zeros_like(bias)
        state[f"{bn_name}.running_var"] = torch.full_like(bias, 1 - eps)
    fresh.load_state_dict(state)
    return fresh.eval()


def _check_same(a: nn.Module, b: nn.Module, x: torch.Tensor, what: str) -> None:
    ya, yb = a(x), b(x)
    if not (torch.isfinite(ya).all() and torch.isfinite(yb).all()):
        raise CheckpointError(f"QAT: {what} gave non-finite outputs (the weights overflow: a diverged QAT, or a "
                              "broken checkpoint); retry with a lower --lr")
    err = float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-12))
    if not err <= FOLD_TOLERANCE:
        raise CheckpointError(f"QAT: {what} changed the outputs (relative difference {err:.2g}); this architecture "
                              "is not a plain convolution -> BatchNorm network QAT can fold")


def _seed(cfg: QATConfig) -> int:
    """The fine-tune's split seed: --split-seed, else config.yaml's `split_seed` (or its `seed` when that is unset,
    as the fine-tune itself falls back), else 0 with a warning."""
    if cfg.seed is not None:
        return cfg.seed
    saved = Path(cfg.checkpoint).parent / "config.yaml"
    if saved.is_file():
        import yaml

        config = yaml.safe_load(saved.read_text()) or {}
        seed = config.get("split_seed") if config.get("split_seed") is not None else config.get("seed")
        if isinstance(seed, int):
            return seed
    log.warning("no config.yaml beside %s: splitting with seed 0 (pass --split-seed, the fine-tune's)", cfg.checkpoint)
    return 0


def _check_same_splits(cfg: QATConfig, splits: dict[str, list], seed: int) -> None:
    """Refuse a split that differs from the fine-tune's recorded one (splits.csv beside the checkpoint): QAT would
    train on the fine-tune's test images and report its before/after table on other frames."""
    recorded = Path(cfg.checkpoint).parent / "splits.csv"
    if not recorded.is_file():
        return

    def key(image: str) -> str:  # folder + file name: the same image whether --data was given relative or absolute
        return "/".join(Path(image).parts[-2:])

    try:
        with open(recorded, newline="", encoding="utf-8") as f:
            before = {key(row["image"]): row["split"] for row in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError) as exc:
        raise CheckpointError(f"{recorded}: not a readable pocus finetune splits.csv ({exc!r}); restore the "
                              "fine-tune's file, which QAT checks its split against") from exc
    now = {key(s.image): name for name, items in splits.items() for s in items}
    moved = [n for n in now if n in before and before[n] != now[n]]
    if moved:
        raise ConfigError(f"--split-seed {seed}: {len(moved)} of --data {cfg.data}'s images fall in another split "
                          f"than in the fine-tune's {recorded} (e.g. {moved[0]}: {before[moved[0]]} then, "
                          f"{now[moved[0]]} now); pass the fine-tune's --split-seed")


def _load(cfg: QATConfig, task: str, card: dict) -> tuple[Any, dict]:
    from ..models.vit_lora import is_vit_arch
    from .model import build_finetune_model

    arch = card.get("encoder")
    if is_vit_arch(arch):
        raise ConfigError(f"{cfg.checkpoint}: a {arch} (ViT-LoRA) checkpoint; QAT here is for convolutional "
                          "networks (BatchNorm folded into convolutions)")
    decoder = tuple(card["decoder_channels"]) if card.get("decoder_channels") else None
    return build_finetune_model(task, arch, cfg.checkpoint, int(card.get("num_classes", 1)), False, decoder)


def run_qat(cfg: QATConfig) -> dict[str, Any]:
    """QAT fine-tune `cfg.checkpoint` on `cfg.data`; writes OUT (checkpoint, metrics.json, qat_report.md)."""
    from ..models.encoder_io import read_card

    cfg.validate()
    card = read_card(Path(cfg.checkpoint))
    if card.get("kind") != "task_model":
        raise CheckpointError(f"{cfg.checkpoint}: not a pocus finetune checkpoint (card kind {card.get('kind')!r}); "
                              "QAT fine-tunes a trained segmentation or classification model")
    task, labels, size = card["task"], list(card["labels"]), int(card["input_size"][0])
    evaluation = card_evaluation(card, cfg.checkpoint)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    allocator = keep_freed_memory()  # each step reuses the last one's memory (pocus_edge/allocator.py)
    seed = _seed(cfg)
    torch.manual_seed(seed)
    samples = read_samples(Path(cfg.data), task)
    splits = split_samples(samples, seed, task == "classification")
    _check_same_splits(cfg, splits, seed)
    if task == "classification" and sorted({s.label for s in samples}) != labels:
        raise DataError(f"--data {cfg.data}: labels {sorted({s.label for s in samples})} differ from the "
                        f"checkpoint's {labels}")
    model, init = _load(cfg, task, card)
    original = model.net.eval()
    example = torch.rand(2, 3, size, size)
    folded, pairs = fold_batchnorm(original, example)
    start = time.time()
    prepared, history = _train(cfg, evaluation, folded, splits, seed, card.get("label_fraction", 1.0))
    qat_net = unfold_into(_load(cfg, task, card)[0].net, prepared.state_dict(), pairs)
    with torch.no_grad():
        _check_same(qat_net, _float_of(folded, prepared), example, "writing the QAT weights back")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table = _before_after(evaluation, original, qat_net, splits)
    record = {"method": "PT2E QAT: torchao prepare_qat_pt2e with litert-torch's PT2EQuantizer config (int8 "
                        "per-channel symmetric weights, int8 per-tensor affine activations)",
              "batchnorm": "folded into the convolutions before QAT (frozen statistics); stored as identity "
                           "BatchNorm + bias", "export_ranges": "recalibrated by pocus-export on --calib-data",
              "epochs": cfg.epochs, "lr": cfg.lr, "seed": seed, "source_checkpoint": str(cfg.checkpoint),
              "source_sha256": card["weights_sha256"]}
    args = SimpleNamespace(task=task, architecture=card["encoder"], image_size=size, linear_probe=False,
                           label_fraction=card.get("label_fraction", 1.0))
    origin = {"origin": f"{cfg.checkpoint} (sha256 {card['weights_sha256'][:12]}) + QAT",
              "decoder_channels": card.get("decoder_channels"), "init_sha256": card["weights_sha256"],
              "smoke_test_only": bool(card.get("smoke_test_only", False)), "name": card.get("name")}
    from .model import save_task_model

    saved = save_task_model(out / "model.safetensors", qat_net, args, labels, origin, {"qat": record})
    summary = nan_to_null({"task": task, "qat": record, "train_images": len(splits["train"]),
                           "val_images": len(splits["val"]), "test_images": len(splits["test"]),
                           "wall_time_s": round(time.time() - start, 1), "history": history,
                           "kept_epoch": kept_epoch(history), "test": table, "weights_sha256": saved["weights_sha256"],
                           "allocator": allocator})
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "qat_report.md", report_markdown(summary))
    import yaml

    atomic_write_text(out / "config.yaml", yaml.safe_dump({**asdict(cfg), "seed": seed}, sort_keys=False))
    return summary


def _float_of(folded: nn.Module, prepared) -> nn.Module:
    """The folded float model with the weights QAT ended with (fake quantisation removed)."""
    net = copy.deepcopy(folded)
    own = net.state_dict()
    net.load_state_dict({k: v for k, v in prepared.state_dict().items() if k in own})
    return net.eval()


def _train(cfg: QATConfig, evaluation: Evaluation, folded: nn.Module, splits, seed: int, fraction: float):
    """(the prepared PT2E model at its best validation epoch, per-epoch history)."""
    from torchao.quantization.pt2e import move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from ..distill.progress import TrainProgress, progress_enabled
    from ..export.tflite_mixed import in_eval
    from .train import _batches, _schedule

    task, labels, size = evaluation.task, evaluation.labels, evaluation.pre["image_size"][0]
    prepared = prepare_qat_pt2e(captured(folded, size), quantizer(qat=True))
    train = label_fraction(splits["train"], fraction, seed, task == "classification")  # the fine-tune's images
    data = [(*load_pair(s), s.label) for s in train]
    steps = max(1, len(data) // cfg.batch_size)
    steps = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps
    params = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps * cfg.epochs, 0))
    rng = np.random.default_rng(seed)
    batch_cfg = SimpleNamespace(task=task, image_size=size, batch_size=cfg.batch_size, pre=evaluation.pre)
    key = "dice" if task == "segmentation" else "macro_f1"
    best, best_state, history = _start(prepared, evaluation, splits["val"], _batches(batch_cfg, data, labels, rng),
                                       min(steps, START_BATCHES), key)
    with TrainProgress(steps * cfg.epochs, 0, progress_enabled(log), label="qat") as progress:  # as finetune's
        for epoch in range(cfg.epochs):
            move_exported_model_to_train(prepared)
            losses = []
            what = f"qat epoch {epoch + 1}/{cfg.epochs}" + (f" (val {key} {best:.3f})" if best >= 0 else "")
            t_step = time.perf_counter()
            batches = itertools.islice(_batches(batch_cfg, data, labels, rng), steps)
            for step, (images, loss) in enumerate(_optimizer_steps(prepared, batches, task, optimizer, scheduler)):
                losses.append(loss)
                now = time.perf_counter()
                progress.update(epoch * steps + step + 1, loss, images / max(now - t_step, 1e-9), what)
                t_step = now
            val = evaluate(evaluation, in_eval(prepared), splits["val"])
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), f"val_{key}_fake_quant": val[key]})
            if not progress.live:  # the bar shows it on a terminal; logs (files, pipes) keep one line per epoch
                log.info("qat epoch %d: loss %.4f, val %s (fake-quantised) %.4f", epoch + 1, np.mean(losses), key,
                         val[key])
            if val[key] > best:
                best, best_state = val[key], copy.deepcopy(prepared.state_dict())
    if kept_epoch(history) == 0:
        log.warning("qat: no epoch raised the fake-quantised validation %s above the starting model's %.4f; the "
                    "checkpoint keeps the starting weights (BatchNorm folded). Try a lower --lr or more steps",
                    key, best)
    prepared.load_state_dict(best_state)
    return in_eval(prepared), history


def kept_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch QAT keeps: the best fake-quantised validation score, the earliest on a tie (0: the start)."""
    score = next(k for k in history[0] if k.startswith("val_"))
    return max(history, key=lambda h: (h[score], -h["epoch"]))["epoch"]


def _start(prepared, evaluation: Evaluation, val, batches, n_batches: int, key: str):
    """(val score, state, history) of epoch 0: the fake-quantised starting model, its observers set by `n_batches`
    training batches without an optimizer step. QAT keeps it unless an epoch beats it on val, so the command
    never returns a model worse on val than the post-training quantisation it started from."""
    from torchao.quantization.pt2e import move_exported_model_to_train

    from ..export.tflite_mixed import in_eval

    if not val:
        raise DataError("QAT keeps the epoch with the best fake-quantised validation score, and this split has no "
                        "validation images; pass --data with more images")
    move_exported_model_to_train(prepared)
    with torch.no_grad():
        for x, _ in itertools.islice(batches, n_batches):
            prepared(x)
    val = evaluate(evaluation, in_eval(prepared), val)
    return val[key], copy.deepcopy(prepared.state_dict()), [{"epoch": 0, "loss": None,
                                                              f"val_{key}_fake_quant": val[key]}]


def _optimizer_steps(model, batches, task: str, optimizer, scheduler):
    """One optimizer step per (x, y) batch; yields (images in the batch, loss)."""
    from .train import _loss

    for x, y in batches:
        loss = _loss(task, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        yield len(x), float(loss.detach())


def simulated_int8(net: nn.Module, pre: dict[str, Any], frames: list[np.ndarray]):
    """`net` quantised as the TFLite int8 exporter does (PT2E PTQ, litert-torch config) on `frames` (gray, fed
    one at a time as the exporter calibrates), in PyTorch."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from ..models.inference import frame_outputs

    prepared = prepare_pt2e(captured(net.eval(), pre["image_size"][0]), quantizer(qat=False))
    prepared.training = False  # traced from the eval model; exported graphs refuse .eval() (torch_outputs asks)
    frame_outputs(prepared, frames, pre, batch_size=1)
    converted = convert_pt2e(prepared, fold_quantize=False)
    converted.training = False
    return converted


def _before_after(evaluation: Evaluation, before: nn.Module, after: nn.Module, splits) -> dict[str, Any]:
    """Test metrics of float and simulated int8, before and after QAT, and int8-vs-own-float agreement."""
    from ..export.parity import compare
    from ..export.quantize import PRIMARY
    from ..models.inference import frame_outputs
    from ..runtime.images import to_gray01

    calib = [to_gray01(load_pair(s)[0]) for s in splits["train"][:CALIB_FRAMES]]
    test = [to_gray01(load_pair(s)[0]) for s in splits["test"]]
    table: dict[str, Any] = {"split": "test", "images": len(test), "calibration_frames": len(calib)}
    for name, net in (("before", before), ("after", after)):
        int8 = simulated_int8(net, evaluation.pre, calib)
        row = {"float": evaluate(evaluation, net, splits["test"]),
               "int8_simulated": evaluate(evaluation, int8, splits["test"])}
        if test:
            metric = PRIMARY[evaluation.task]
            ref, out = frame_outputs(net, test, evaluation.pre), frame_outputs(int8, test, evaluation.pre)
            row[f"int8_agreement_{metric}"] = compare(evaluation.task, ref, out, evaluation.post)[metric]
        table[name] = row
    return table


def report_markdown(summary: dict[str, Any]) -> str:
    """qat_report.md: the before/after table."""
    table = summary["test"]
    key = "dice" if summary["task"] == "segmentation" else "accuracy"
    agree = next((k for k in table["before"] if k.startswith("int8_agreement_")), None)
    lines = [f"# QAT before/after ({table['split']} split, {table['images']} images)", "",
             f"| model | float {key} | int8 {key} (simulated) | int8 agreement with its float |", "|---|---|---|---|"]
    for name in ("before", "after"):
        row = table[name]
        lines.append(f"| {name} QAT | {_fmt(row['float'].get(key))} | {_fmt(row['int8_simulated'].get(key))} | "
                     f"{_fmt(row.get(agree)) if agree else 'n/a'} |")
    kept = summary.get("kept_epoch")
    if kept is not None:
        lines += ["", f"Kept: epoch {kept} of {len(summary['history']) - 1}, by fake-quantised validation score"
                  + (" (epoch 0 = the starting weights: no QAT epoch beat them, so after = before)" if kept == 0
                     else "") + "."]
    lines += ["", f"int8 simulated: the TFLite exporter's PT2E quantisation in PyTorch, calibrated on "
              f"{table['calibration_frames']} training frames. The exported bundles' own agreement is their "
              "parity.json (pocus-export recalibrates on --calib-data).", ""]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.4f}"
