"""`pocus finetune`, `pocus eval`, `pocus sweep` and `pocus embed-plot`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_common import (
    ARCHITECTURE_NAMES,
    RegistryHelpCommand,
    console,
    emit_json,
    json_option,
    print_markdown,
    print_summary,
    quiet_option,
    setup_logging,
    task_argument,
    verbose_option,
)
from ..errors import ConfigError
from ..limits import check, check_out

_setup_logging = setup_logging
_print_summary = print_summary


def register(app: typer.Typer) -> None:
    """Add the downstream-evaluation commands to the `pocus` app."""
    app.command(cls=RegistryHelpCommand, short_help="Fine-tune or linearly probe a U-Net / classifier on labelled "
                "ultrasound.")(finetune)
    app.command()(qat)
    app.command("eval")(eval_cmd)
    app.command()(sweep)
    app.command("embed-plot")(embed_plot_cmd)


def finetune(
    task: str = typer.Argument(..., help="seg (U-Net) or cls (classifier)."),
    data: Path = typer.Option(..., "--data", help="Folder with images/, masks/, manifest.csv (or class folders)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: model.safetensors + model.json, metrics, "
                             "splits."),
    encoder: str = typer.Option("random", help="random, a student.safetensors from pocus distill, or a "
                                "model.safetensors of the same task (e.g. from pocus kd) to start from."),
    architecture: str | None = typer.Option(None, metavar="NAME", help=f"Encoder architecture, a timm name: "
                                            f"{ARCHITECTURE_NAMES} [default: the --encoder card's, else resnet50]."),
    decoder_channels: str | None = typer.Option(None, metavar="WIDTHS|auto", help="seg: U-Net decoder widths, "
                                                "four or five, deepest first (four: the head runs at 1/2 resolution), "
                                                "or auto [default: auto: 256,128,64,32,16 for ResNets, 48,32,24,16,8 "
                                                "for phone-class]."),
    backbone_weights: str | None = typer.Option(None, help="ViT-LoRA teacher (--architecture vit_base_patch16_dinov3"
                                                ", a frozen DINOv3/DINOv2 ViT): its local weights file (.safetensors "
                                                "or Meta's .pth), or random for smoke tests."),
    lora_rank: int | None = typer.Option(None, help="ViT-LoRA: adapter rank on q and v of every block [default: 8]."),
    lora_alpha: float | None = typer.Option(None, help="ViT-LoRA: adapter alpha (scaling alpha/rank) "
                                            "[default: 2 x rank]."),
    linear_probe: bool = typer.Option(False, "--linear-probe", help="Freeze the encoder; train only the head."),
    label_fraction: float = typer.Option(1.0, help="Share of the training split used (0 < F <= 1)."),
    epochs: int = typer.Option(20, help="Epochs."),
    image_size: int = typer.Option(256, help="Input size, multiple of 32."),
    batch_size: int = typer.Option(16, help="Batch size."),
    lr: float | None = typer.Option(None, help="AdamW learning rate [default: 3e-4; 1e-3 for the linear probe; "
                                    "5e-3 for ViT-LoRA]."),
    max_steps_per_epoch: int = typer.Option(0, help="Cap optimizer steps per epoch (0 = full epochs)."),
    seed: int = typer.Option(0, help="Seed for splits, init and augmentation."),
    split_seed: int | None = typer.Option(None, help="Seed of the train/val/test split and label subset only; fix it "
                                          "to compare training seeds on one test set [default: --seed]."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = default)."),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("metrics.json's content"),
) -> None:
    """Fine-tune or linearly probe a U-Net / classifier on labelled ultrasound; writes an exportable checkpoint."""
    from .train import FinetuneConfig, run_finetune

    task_name = task_argument(task)
    _setup_logging(quiet, verbose)
    cfg = FinetuneConfig(task=task_name, data=str(data), out=str(out), encoder=encoder,
                         architecture=architecture, linear_probe=linear_probe,
                         decoder_channels=_decoder_list(decoder_channels), label_fraction=label_fraction,
                         epochs=epochs, image_size=image_size, batch_size=batch_size, lr=lr, seed=seed,
                         split_seed=split_seed,
                         threads=threads, max_steps_per_epoch=max_steps_per_epoch, backbone_weights=backbone_weights,
                         lora_rank=lora_rank, lora_alpha=lora_alpha)
    summary = run_finetune(cfg)
    if not emit_json(json_out, summary) and not quiet:
        flat = {"encoder": summary["encoder"], "train/val/test images":
                f"{summary['train_images']}/{summary['val_images']}/{summary['test_images']}",
                **{f"test {k}": v for k, v in summary["test"].items() if isinstance(v, (int, float))},
                "wall time (s)": summary["wall_time_s"]}
        _print_summary("finetune", flat, out)


def qat(
    checkpoint: Path = typer.Argument(..., help="A pocus finetune checkpoint (model.safetensors, or its folder)."),
    data: Path = typer.Option(..., "--data", help="The labelled folder it was fine-tuned on (same splits)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: model.safetensors + model.json (card: qat), "
                             "metrics.json, qat_report.md."),
    epochs: int = typer.Option(3, help="QAT epochs (a short fine-tune)."),
    batch_size: int = typer.Option(8, help="Batch size."),
    lr: float = typer.Option(5e-5, help="AdamW learning rate (cosine decay)."),
    max_steps_per_epoch: int = typer.Option(0, help="Cap optimizer steps per epoch (0 = full epochs)."),
    seed: int | None = typer.Option(None, "--split-seed", "--seed", help="Split seed [default: the fine-tune's, from "
                                    "config.yaml beside CHECKPOINT] (--seed is the earlier name)."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = default)."),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("metrics.json's content"),
) -> None:
    """Quantization-aware fine-tune (PT2E QAT) of a trained checkpoint, for int8 exports that keep accuracy."""
    from ..export.tflite import hidden_library_stdout
    from .qat import QATConfig, run_qat

    _setup_logging(quiet, verbose)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "model.safetensors"
    with hidden_library_stdout(not verbose):  # the PT2E annotators print() per partition (litert-torch)
        summary = run_qat(QATConfig(checkpoint=str(checkpoint), data=str(data), out=str(out), epochs=epochs,
                                    batch_size=batch_size, lr=lr, seed=seed, threads=threads,
                                    max_steps_per_epoch=max_steps_per_epoch))
    if not emit_json(json_out, summary) and not quiet:
        key = "dice" if summary["task"] == "segmentation" else "accuracy"
        test = summary["test"]
        flat = {f"{when} QAT: {kind} {key}": test[when][kind].get(key) for when in ("before", "after")
                for kind in ("float", "int8_simulated")}
        flat["wall time (s)"] = summary["wall_time_s"]
        _print_summary("qat", flat, out)


def _decoder_list(text: str | None) -> list[int] | None:
    from ..models.registry import parse_decoder_channels

    widths = parse_decoder_channels(text)
    return list(widths) if widths else None


def eval_cmd(
    model: Path = typer.Argument(..., help="A finetune checkpoint (model.safetensors) or an exported bundle folder."),
    data: Path = typer.Option(..., "--data", help="Labelled folder (same layout as pocus finetune)."),
    split: str = typer.Option("test", help="test | val | train | all (splits as in pocus finetune)."),
    seed: int = typer.Option(0, "--split-seed", "--seed", help="Seed of the split (use the fine-tune's "
                             "--split-seed; --seed is the earlier name)."),
    threads: int | None = typer.Option(None, help="Runtime threads for bundles."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write eval.json with per-image rows to this folder."),
    measure: str | None = typer.Option(None, "--measure", help="ellipse: head circumference (mm) of the masks vs "
                                       "manifest.csv's head_circumference_mm, per split."),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("the report"),
) -> None:
    """Ground-truth metrics (Dice, IoU, HD95 / accuracy, macro-F1) for a checkpoint or a bundle."""
    from .eval_cli import run_eval

    _setup_logging(quiet, verbose)
    if threads is not None:
        check("runtime_threads", threads, "--threads")
    if out is not None:
        check_out(out)
    report = run_eval(model, data, split, seed, threads, out, measure, progress=not quiet)
    if not emit_json(json_out, report) and not quiet:
        flat = {"evaluated as": report["evaluated_as"], "split": report["split"],
                **{k: v for k, v in report["metrics"].items() if isinstance(v, (int, float))},
                **{f"HC {name}: {k}": v for name, hc in report.get("head_circumference", {}).items()
                   for k, v in hc.items() if k != "images"}}
        _print_summary("eval", flat, model)


def sweep(
    task: str = typer.Argument(..., help="seg or cls."),
    data: Path = typer.Option(..., "--data", help="Labelled folder."),
    encoder: list[str] = typer.Option(["random"], "--encoder", metavar="random|NAME=FILE", help="random or "
                                      "NAME=student.safetensors (repeatable)."),
    fractions: str = typer.Option("0.05,0.1,0.2,0.5,1", help="Label fractions, comma-separated."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for runs/, sweep.json and sweep.md."),
    epochs: int = typer.Option(20, help="Epochs per run."),
    image_size: int = typer.Option(256, help="Input size."),
    batch_size: int = typer.Option(16, help="Batch size."),
    max_steps_per_epoch: int = typer.Option(0, help="Cap optimizer steps per epoch (0 = full)."),
    linear_probe: bool = typer.Option(False, "--linear-probe", help="Freeze the encoders; train only the heads."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = default)."),
) -> None:
    """Label fractions x initialisations -> a Table-3-style Markdown + JSON table of test metrics."""
    from .sweep import parse_encoders, run_sweep
    from .train import FinetuneConfig

    task_name = task_argument(task)
    try:
        fraction_list = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--fractions {fractions!r}: expected numbers such as 0.05,0.1,1")
    if not fraction_list:
        raise ConfigError(f"--fractions {fractions!r}: give at least one label fraction, e.g. 0.1,1")
    for fraction in fraction_list:
        check("label_fraction", fraction, "--fractions")
    # every cell is a finetune run: check its settings now, not after the first cells have trained
    FinetuneConfig(task=task_name, data=str(data), out=str(out), epochs=epochs, image_size=image_size,
                   batch_size=batch_size, threads=threads, max_steps_per_epoch=max_steps_per_epoch).validate()
    _setup_logging(True)
    result = run_sweep(task_name, str(data), parse_encoders(encoder), fraction_list, out, epochs=epochs,
                       image_size=image_size, batch_size=batch_size, max_steps_per_epoch=max_steps_per_epoch,
                       linear_probe=linear_probe, threads=threads)
    from .sweep import sweep_table

    print_markdown(sweep_table(result))


def embed_plot_cmd(
    encoder: list[str] = typer.Option(..., "--encoder", metavar="random|FILE", help="random or a "
                                      "student.safetensors (repeatable)."),
    data: list[Path] = typer.Option(..., "--data", metavar="DIR", help="Dataset folders, one colour each "
                                    "(repeatable)."),
    out: Path = typer.Option(Path("embeddings.png"), "--out", "-o", help="PNG to write."),
    per_dataset: int = typer.Option(100, help="Frames per dataset."),
    image_size: int = typer.Option(224, help="Input size."),
) -> None:
    """t-SNE of encoder embeddings coloured by dataset (the paper's Figure 2)."""
    from .embed_plot import embed_plot

    check("per_dataset", per_dataset)
    check("image_size", image_size)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; embed-plot writes one PNG file, e.g. --out embeddings.png")
    counts = embed_plot(encoder, data, out, per_dataset, image_size)
    console.print(f"wrote {out}: {counts}", highlight=False)
