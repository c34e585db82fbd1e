"""`pocus kd seg|cls`: task-specific distillation of a fine-tuned teacher into a (phone-class) student."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_common import (
    ARCHITECTURE_NAMES,
    RegistryHelpCommand,
    emit_json,
    json_option,
    print_summary,
    quiet_option,
    setup_logging,
    task_argument,
    verbose_option,
)
from ..errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add `pocus kd` to the `pocus` app."""
    app.command("kd", cls=RegistryHelpCommand, short_help="Distil a fine-tuned teacher into a small student on "
                "unlabeled frames, then fine-tune it.")(kd)


def kd(
    task: str = typer.Argument(..., help="seg (U-Net) or cls (classifier); must match the teacher."),
    teacher: Path = typer.Option(..., "--teacher", help="The fine-tuned teacher: a model.safetensors from pocus "
                                 "finetune (frozen, eval mode)."),
    student: str = typer.Option("mobilenetv3_large_100", "--student", metavar="NAME", help="Student architecture "
                                f"(timm name): {ARCHITECTURE_NAMES}."),
    transfer: list[Path] = typer.Option(..., "--transfer", metavar="DIR", help="Unlabeled transfer-set folder(s) "
                                        "(repeatable); images of --data's validation and test splits are removed "
                                        "by content."),
    transfer_list: Path | None = typer.Option(None, "--transfer-list", help="Distil only on the frames of "
                                              "--transfer this list names (pocus corpus select --out)."),
    crop_overlays: bool = typer.Option(False, "--crop-overlays", help="Crop each transfer frame to its ultrasound "
                                       "region (as the list was selected with it); stage 2 and the runtime still "
                                       "see whole frames."),
    data: Path = typer.Option(..., "--data", help="Labelled folder for stage 2 (same layout as pocus finetune)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: kd/ (stage 1) and the final finetune checkpoint."),
    label_fraction: float = typer.Option(1.0, help="Share of the training split used in stage 2 (0 < F <= 1)."),
    epochs: int = typer.Option(20, help="Epochs of each stage (see --kd-epochs, --finetune-epochs)."),
    kd_epochs: int | None = typer.Option(None, help="Stage 1 epochs over the transfer set [default: --epochs]."),
    finetune_epochs: int | None = typer.Option(None, help="Stage 2 epochs [default: --epochs]."),
    max_steps: int = typer.Option(0, help="Stage 1: stop after this many optimizer steps (0 = epochs decide)."),
    max_steps_per_epoch: int = typer.Option(0, help="Stage 2: cap optimizer steps per epoch (0 = full epochs)."),
    batch_size: int = typer.Option(16, help="Batch size of both stages."),
    image_size: int = typer.Option(256, help="Input size, multiple of 32."),
    lr: float = typer.Option(1e-3, help="Stage 1 AdamW peak learning rate (warm-up 5 %, cosine)."),
    finetune_lr: float | None = typer.Option(None, help="Stage 2 learning rate [default: pocus finetune's 3e-4]."),
    output_weight: float = typer.Option(0.2, help="Weight of the output (logit) loss (TS-KD: 0.2)."),
    hidden_weight: float = typer.Option(0.1, help="Weight of the hidden-feature loss (TS-KD: 0.1); 0 = output only."),
    temperature: float = typer.Option(0.0, help="cls: > 0 distils softmax(logits/T) by KL instead of logit MSE."),
    transfer_expand: int = typer.Option(0, help="Fixed augmented variants added per transfer image (0..64)."),
    decoder_channels: str | None = typer.Option(None, metavar="WIDTHS|auto", help="seg: student U-Net decoder "
                                                "widths (four or five, deepest first), or auto [default: slim for "
                                                "phone-class students]."),
    aug: str = typer.Option("ultrasound", help="Stage 1 augmentation preset: ultrasound | natural."),
    num_workers: int = typer.Option(2, help="Stage 1 data-loader worker processes."),
    seed: int = typer.Option(0, help="Seed for splits, init, data order and augmentation."),
    split_seed: int | None = typer.Option(None, help="Seed of the labelled split only (and so of the val/test images "
                                          "kept out of the transfer set) [default: --seed]."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = default)."),
    resume: bool = typer.Option(False, "--resume", help="Continue stage 1 from its newest valid checkpoint (or reuse "
                                "a finished stage 1) and run stage 2; `--resume auto` also starts a run that has no "
                                "checkpoint yet."),
    resume_auto: bool = typer.Option(False, "--resume-auto", hidden=True),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("the summary"),
) -> None:
    """Distil a fine-tuned teacher into a small student on unlabeled frames (TS-KD), then fine-tune it on labels."""
    from ..models.registry import canonical_arch, parse_decoder_channels
    from .config import KDConfig
    from .run import run_kd

    task_name = task_argument(task)
    if transfer_list is not None and not transfer_list.is_file():
        raise ConfigError(f"--transfer-list {transfer_list}: no such file; pass the list written by "
                          "`pocus corpus select --out`")
    setup_logging(quiet, verbose)
    widths = parse_decoder_channels(decoder_channels)
    cfg = KDConfig(task=task_name, teacher_checkpoint=str(teacher), student=canonical_arch(student, "--student"),
                   data=[str(t) for t in transfer], data_list=str(transfer_list or ""), crop_overlays=crop_overlays,
                   labeled_data=str(data),
                   out=str(out),
                   label_fraction=label_fraction, epochs=kd_epochs or epochs, max_steps=max_steps,
                   finetune_epochs=finetune_epochs or epochs, finetune_max_steps_per_epoch=max_steps_per_epoch,
                   batch_size=batch_size, finetune_batch_size=batch_size, image_size=image_size, lr=lr,
                   finetune_lr=finetune_lr, output_weight=output_weight, hidden_weight=hidden_weight,
                   temperature=temperature, transfer_expand=transfer_expand,
                   decoder_channels=list(widths) if widths else None, aug=aug, num_workers=num_workers, seed=seed,
                   split_seed=split_seed,
                   threads=threads, resume="auto" if resume_auto else resume, quiet=quiet)
    summary = run_kd(cfg)
    if not emit_json(json_out, summary) and not quiet:
        test = summary["finetune"]["test"]
        print_summary("kd", {
            "student": cfg.student, "transfer frames (train/held-out)":
            f"{summary['transfer']['train_frames']}/{summary['transfer']['held_out_frames']}",
            "removed (labelled val/test images)": summary["transfer"]["removed_labelled_val_test"],
            "stage 1 held-out R² (logits)": summary["kd"].get("held_out_r2_end"),
            **{f"test {k}": v for k, v in test.items() if isinstance(v, (int, float))}}, out)
