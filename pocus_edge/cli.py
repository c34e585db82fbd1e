"""The `pocus` command line (typer): `distill` and `demo`, the registration of every other command, `_run` and the
console scripts (`pocus`, `pocus-distill`, `pocus-export`, `pocus-bench`).

Commands live with what they drive: export/commands.py (export, info, verify, keygen), runtime/commands.py
(predict), finetune/commands.py (finetune, qat, eval, sweep, embed-plot), kd/commands.py, bench/commands.py,
data/commands.py (corpus); cli_common.py holds what they share (--json FILE, -q/-v, the summary table).
Every error a user can cause ends as one line `error: ...` and exit code 2; tracebacks are for bugs.
Heavy imports (torch, timm) happen inside commands so `pocus --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from .chatter import hidden_native_stderr, quiet_environment
from .cli_common import (
    HELP_SETTINGS,
    console,
    emit_json,
    json_option,
    json_stdout_argv,
    os_error_line,
    print_summary,
    quiet_option,
    readable_help,
    setup_logging,
    usage_exit_code,
    verbose_option,
)
from .errors import PocusError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="pocus-edge: distil, export and run POCUS models.",
                  rich_markup_mode=None, context_settings=HELP_SETTINGS)  # plain help: "[256]" stays text


_setup_logging = setup_logging
_print_summary = print_summary


@app.command()
def distill(
    data: list[Path] = typer.Option(None, "--data", metavar="DIR", help="Folder(s) of unlabeled ultrasound "
                                    "(repeatable)."),
    data_list: Path | None = typer.Option(None, "--data-list", help="Train only on the frames of --data this list "
                                          "names (pocus corpus select --out; PATH or PATH#FRAME per line)."),
    crop_overlays: bool | None = typer.Option(None, "--crop-overlays/--no-crop-overlays", help="Crop each frame to "
                                              "its ultrasound region (DICOM regions, else the largest bright "
                                              "component) so burned-in text and rulers never reach the teacher."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder: checkpoints, student, metrics."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with any of these settings."),
    teacher: str | None = typer.Option(None, help="timm DINOv3/DINOv2 ViT [default: vit_base_patch16_dinov3]."),
    teacher_weights: str | None = typer.Option(None, help="Local .safetensors/.pth file, or 'random' (smoke tests)."),
    student: str | None = typer.Option(None, help="timm CNN student [default: resnet50]."),
    blocks: str | None = typer.Option(None, help="Teacher block indices, comma-separated [default: last two]."),
    aggregate: str | None = typer.Option(None, help="concat | mean of the blocks' tokens [default: concat]."),
    image_size: int | None = typer.Option(None, help="Input size, multiple of 32 [default: 256]."),
    batch_size: int | None = typer.Option(None, help="Global batch per optimizer step [default: 512]."),
    accum_steps: int | None = typer.Option(None, help="Gradient accumulation steps [default: auto]."),
    epochs: int | None = typer.Option(None, help="Epochs [default: 1000]."),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps (0 = epochs decide)."),
    lr: float | None = typer.Option(None, help="Peak AdamW learning rate [default: 1e-4]."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay [default: 0.05]."),
    warmup_steps: int | None = typer.Option(None, help="Warm-up steps [default: 5% of the schedule]."),
    aug: str | None = typer.Option(None, help="ultrasound | natural augmentation preset [default: ultrasound]."),
    mixup: bool | None = typer.Option(None, "--mixup/--no-mixup", help="In-batch mixup [default: on]."),
    precision: str | None = typer.Option(None, help="auto | bf16 | fp16 | fp32 [default: auto: bf16 on capable GPUs]."),
    save_every: str | None = typer.Option(None, help="Checkpoint every N steps ('500') or epochs ('1ep')."),
    keep_last: int | None = typer.Option(None, help="Checkpoints kept [default: 3]."),
    held_out_fraction: float | None = typer.Option(None, help="Held-out share for token R², 0..0.5 [default: 0.05]."),
    held_out_data: list[Path] = typer.Option(None, "--held-out-data", help="Measure token R² on these folders' "
                                             "frames instead of a split of --data (repeatable); training frames "
                                             "with the same pixels are dropped."),
    exclude_eval_splits: list[Path] = typer.Option(None, "--exclude-eval-splits", help="Labelled folder whose "
                                                   "validation/test images (as pocus finetune seg and cls split it, "
                                                   "--eval-split-seed) must not be distilled on (repeatable)."),
    eval_split_seed: int | None = typer.Option(None, help="Seed of the downstream fine-tunes' splits [default: 0]."),
    objective: str | None = typer.Option(None, help="token-mse (the paper's token MSE) | masked-consistency "
                                         "(masked views weighted by teacher consistency + L1 reconstruction, "
                                         "adapted from TinyUSFM) [default: token-mse]."),
    mask_ratio: float | None = typer.Option(None, help="masked-consistency: share of blocks blanked [default: 0.6]."),
    mask_block: int | None = typer.Option(None, help="masked-consistency: block side in px [default: 32]."),
    ring_mask_ratio: float | None = typer.Option(None, help="masked-consistency: share of frequency rings zeroed "
                                                 "(mask_rings, ring_keep_radius, recon_hidden: --config) "
                                                 "[default: 0.5]."),
    consistency_power: float | None = typer.Option(None, help="masked-consistency: sharpness of the teacher-"
                                                   "consistency weights, 0 = equal [default: 1.0]."),
    feature_weight: float | None = typer.Option(None, help="masked-consistency: weight of the feature term "
                                                "[default: 1.0]."),
    recon_weight: float | None = typer.Option(None, help="masked-consistency: weight of the L1 reconstruction "
                                              "[default: 1.0]."),
    resume: bool | None = typer.Option(None, "--resume", help="Continue from the newest valid checkpoint (fails "
                                       "without one); `--resume auto` starts from step 0 when there is none."),
    resume_auto: bool = typer.Option(False, "--resume-auto", hidden=True),
    num_workers: int | None = typer.Option(None, help="Data-loader worker processes [default: 2]."),
    threads: int | None = typer.Option(None, help="torch CPU threads, 0..4 x CPU cores (0 = default)."),
    seed: int | None = typer.Option(None, help="Seed for init, data order, augmentation [default: 0]."),
    quiet: bool | None = typer.Option(None, "--quiet", "-q", help="No progress bar or info logs."),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("the summary"),
) -> None:
    """Distil a DINOv3 ViT teacher into a CNN student on unlabeled ultrasound."""
    from .distill.config import load_config
    from .distill.trainer import run_distillation

    overrides = dict(
        data=[str(d) for d in data] if data else None, out=str(out) if out else None, teacher=teacher,
        data_list=str(data_list) if data_list else None, crop_overlays=crop_overlays,
        teacher_weights=teacher_weights, student=student, blocks=_parse_blocks(blocks), aggregate=aggregate,
        image_size=image_size, batch_size=batch_size, accum_steps=accum_steps, epochs=epochs, max_steps=max_steps,
        lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, aug=aug, mixup=mixup, precision=precision,
        save_every=save_every, keep_last=keep_last, held_out_fraction=held_out_fraction,
        held_out_data=[str(d) for d in held_out_data] if held_out_data else None,
        exclude_eval_splits=[str(d) for d in exclude_eval_splits] if exclude_eval_splits else None,
        eval_split_seed=eval_split_seed, objective=objective, mask_ratio=mask_ratio, mask_block=mask_block,
        ring_mask_ratio=ring_mask_ratio, consistency_power=consistency_power, feature_weight=feature_weight,
        recon_weight=recon_weight,
        resume="auto" if resume_auto else resume,
        num_workers=num_workers, threads=threads, seed=seed, quiet=quiet,
    )
    cfg = load_config(config, overrides)
    _setup_logging(cfg.quiet, verbose)
    summary = run_distillation(cfg)
    if not emit_json(json_out, summary) and not cfg.quiet:
        _print_summary("distillation", summary, Path(cfg.out))


def _parse_blocks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PocusError(f"--blocks {text!r}: expected comma-separated integers such as '10,11' or '-2,-1'")


@app.command()
def demo(
    data: Path | None = typer.Option(None, "--data", help="Run on this folder instead of synthetic phantoms."),
    out: Path = typer.Option(Path("pocus-demo"), "--out", "-o", help="Where the demo writes its outputs."),
    steps: int = typer.Option(40, help="Distillation steps."),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("the summary"),
) -> None:
    """Run the pipeline end to end on the embedded default (synthetic phantoms) and print a summary."""
    from .demo import run_demo

    _setup_logging(quiet, verbose)
    summary = run_demo(out, data, steps, quiet)
    if not emit_json(json_out, summary) and not quiet:
        _print_summary("pocus demo", summary, out)


from .bench.commands import bench_app  # noqa: E402
from .data.commands import corpus_app  # noqa: E402
from .export.commands import register as _register_export  # noqa: E402
from .finetune.commands import register as _register_finetune  # noqa: E402
from .kd.commands import register as _register_kd  # noqa: E402
from .runtime.commands import register as _register_predict  # noqa: E402

app.add_typer(bench_app, name="bench")
app.add_typer(corpus_app, name="corpus", short_help="Distillation corpora: scan for duplicates, select a budget of "
              "frames.")
for _group in app.registered_groups:
    _group.typer_instance.rich_markup_mode = None  # plain help everywhere ("[256]" defaults are text, not markup)
_register_export(app)
_register_predict(app)
_register_finetune(app)
_register_kd(app)
readable_help(app)


def _run(typer_app: typer.Typer, args: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run the app; user errors (PocusError, usage errors, a full or read-only disk) end as one `error:` line."""
    args = resume_auto_argv(sys.argv[1:] if args is None else list(args))
    args = json_stdout_argv(args, typer.main.get_command(typer_app))
    verbose = "--verbose" in args or "-v" in args
    quiet_environment(verbose)
    with hidden_native_stderr(verbose):
        _run_parsed(typer_app, args, prog_name)


def _run_parsed(typer_app: typer.Typer, args: list[str], prog_name: str | None) -> None:
    try:
        code = typer_app(args=args, standalone_mode=False, prog_name=prog_name)
    except PocusError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except FloatingPointError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(3)
    except OSError as exc:
        line = os_error_line(exc)
        if line is None:
            raise
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # usage errors of typer's click (vendored or not) and their exit codes
        usage_code = usage_exit_code(exc)
        if usage_code is None:
            raise
        sys.exit(usage_code)
    if isinstance(code, int) and not isinstance(code, bool) and code:  # typer.Exit(code) in non-standalone mode
        sys.exit(code)


def resume_auto_argv(args: list[str]) -> list[str]:
    """`--resume auto` -> the hidden flag `--resume-auto` (typer options cannot take an optional value)."""
    out: list[str] = []
    for arg in args:
        if arg == "auto" and out and out[-1] == "--resume":
            out[-1] = "--resume-auto"
        else:
            out.append(arg)
    return out


def main() -> None:
    """Entry point of `pocus`."""
    _run(app)


def export_main() -> None:
    """Entry point of `pocus-export` (same as `pocus export`)."""
    _run(app, ["export", *sys.argv[1:]], prog_name="pocus")


def bench_main() -> None:
    """Entry point of `pocus-bench` (same as `pocus bench`)."""
    _run(app, ["bench", *sys.argv[1:]], prog_name="pocus")


def distill_main() -> None:
    """Entry point of `pocus-distill` (same as `pocus distill`)."""
    _run(app, ["distill", *sys.argv[1:]], prog_name="pocus")


if __name__ == "__main__":
    main()
