"""The `pocus` command line (typer) and the `pocus-distill` console script.

Every error a user can cause ends as one line `error: ...` and exit code 2; tracebacks are for bugs.
Heavy imports (torch, timm) happen inside commands so `pocus --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
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
    setup_logging,
    usage_exit_code,
    verbose_option,
)
from .errors import PocusError
from .export import targets as _targets  # the capability table (light): export's help comes from it
from .limits import check, check_out

app = typer.Typer(add_completion=False, no_args_is_help=True, help="pocus-edge: distil, export and run POCUS models.",
                  rich_markup_mode=None, context_settings=HELP_SETTINGS)  # plain help: "[256]" stays text


_setup_logging = setup_logging
_print_summary = print_summary


@app.command()
def distill(
    data: list[Path] = typer.Option(None, "--data", help="Folder(s) of unlabeled ultrasound (repeatable)."),
    data_list: Path | None = typer.Option(None, "--data-list", help="Train only on the frames of --data this list "
                                          "names (pocus corpus select --out; PATH or PATH#FRAME per line)."),
    crop_overlays: bool | None = typer.Option(None, "--crop-overlays/--no-crop-overlays", help="Crop each frame to "
                                              "its ultrasound region (DICOM regions, else the largest bright "
                                              "component) so burned-in text and rulers never reach the teacher."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder: checkpoints, student, metrics."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with any of these settings."),
    teacher: str | None = typer.Option(None, help="timm DINOv3/DINOv2 ViT [vit_base_patch16_dinov3]."),
    teacher_weights: str | None = typer.Option(None, help="Local .safetensors/.pth file, or 'random' (smoke tests)."),
    student: str | None = typer.Option(None, help="timm CNN student [resnet50]."),
    blocks: str | None = typer.Option(None, help="Teacher block indices, comma-separated [last two]."),
    aggregate: str | None = typer.Option(None, help="concat | mean of the blocks' tokens [concat]."),
    image_size: int | None = typer.Option(None, help="Input size, multiple of 32 [256]."),
    batch_size: int | None = typer.Option(None, help="Global batch per optimizer step [512]."),
    accum_steps: int | None = typer.Option(None, help="Gradient accumulation steps [auto]."),
    epochs: int | None = typer.Option(None, help="Epochs [1000]."),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps (0 = epochs decide)."),
    lr: float | None = typer.Option(None, help="Peak AdamW learning rate [1e-4]."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay [0.05]."),
    warmup_steps: int | None = typer.Option(None, help="Warm-up steps [5% of the schedule]."),
    aug: str | None = typer.Option(None, help="ultrasound | natural augmentation preset [ultrasound]."),
    mixup: bool | None = typer.Option(None, "--mixup/--no-mixup", help="In-batch mixup [on]."),
    precision: str | None = typer.Option(None, help="auto | bf16 | fp16 | fp32 [auto: bf16 on capable GPUs]."),
    save_every: str | None = typer.Option(None, help="Checkpoint every N steps ('500') or epochs ('1ep')."),
    keep_last: int | None = typer.Option(None, help="Checkpoints kept [3]."),
    held_out_fraction: float | None = typer.Option(None, help="Held-out share for token R², 0..0.5 [0.05]."),
    exclude_eval_splits: list[Path] = typer.Option(None, "--exclude-eval-splits", help="Labelled folder whose "
                                                   "validation/test images (as pocus finetune seg and cls split it, "
                                                   "--eval-split-seed) must not be distilled on (repeatable)."),
    eval_split_seed: int | None = typer.Option(None, help="Seed of the downstream fine-tunes' splits [0]."),
    objective: str | None = typer.Option(None, help="token-mse (the paper's token MSE) | masked-consistency "
                                         "(masked views weighted by teacher consistency + L1 reconstruction, "
                                         "adapted from TinyUSFM) [token-mse]."),
    mask_ratio: float | None = typer.Option(None, help="masked-consistency: share of blocks blanked [0.6]."),
    mask_block: int | None = typer.Option(None, help="masked-consistency: block side in px [32]."),
    ring_mask_ratio: float | None = typer.Option(None, help="masked-consistency: share of frequency rings zeroed "
                                                 "[0.5] (mask_rings, ring_keep_radius, recon_hidden: --config)."),
    consistency_power: float | None = typer.Option(None, help="masked-consistency: sharpness of the teacher-"
                                                   "consistency weights, 0 = equal [1.0]."),
    feature_weight: float | None = typer.Option(None, help="masked-consistency: weight of the feature term [1.0]."),
    recon_weight: float | None = typer.Option(None, help="masked-consistency: weight of the L1 reconstruction "
                                              "[1.0]."),
    resume: bool | None = typer.Option(None, "--resume", help="Continue from the newest valid checkpoint (fails "
                                       "without one); `--resume auto` starts from step 0 when there is none."),
    resume_auto: bool = typer.Option(False, "--resume-auto", hidden=True),
    num_workers: int | None = typer.Option(None, help="Data-loader worker processes [2]."),
    threads: int | None = typer.Option(None, help="torch CPU threads, 0..4 x CPU cores (0 = default)."),
    seed: int | None = typer.Option(None, help="Seed for init, data order, augmentation [0]."),
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
) -> None:
    """Run the pipeline end to end on the embedded default (synthetic phantoms) and print a summary."""
    from .demo import run_demo

    _setup_logging(quiet, verbose)
    summary = run_demo(out, data, steps, quiet)
    _print_summary("pocus demo", summary, out)


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="Checkpoint (.safetensors + .json card) or built-in: unet-resnet50, "
                                "classifier-resnet50, encoder-resnet50."),
    target: str = typer.Option(..., "--target", "-t", help=_targets.target_help()),
    precision: str = typer.Option("fp32", "--precision", "-p", help=_targets.precision_help()),
    out: Path | None = typer.Option(None, "--out", "-o", help="Bundle folder [NAME-TARGET-PRECISION]."),
    image_size: int | None = typer.Option(None, help="Input size, multiple of 32 [checkpoint's, or 256]."),
    calib_data: Path | None = typer.Option(None, help=_targets.option_help("calib_data")),
    parity_data: Path | None = typer.Option(None, help="Frames for the parity check (default: int8, the "
                                            "held-out part of --calib-data, an error if it is empty; else "
                                            "synthetic phantoms). `phantoms`: synthetic phantoms by choice."),
    batch: str = typer.Option("1", help=_targets.option_help("dynamic_batch"), show_default=False),
    raw_input: bool = typer.Option(False, "--raw-input", help="Model takes 1-channel pixels 0..255 (pre-processing "
                                   "folded into the first convolution)."),
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the PyTorch parity check (recorded as skipped)."),
    parity_threshold: list[str] = typer.Option(None, help="Override a parity threshold, METRIC=VALUE (repeatable)."),
    calib_method: str | None = typer.Option(None, help=_targets.option_help("calibration_method")),
    num_calib: int | None = typer.Option(None, help=_targets.option_help("num_calib")),
    num_parity: int = typer.Option(32, help="Parity images used at most."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle folder."),
    fold_upsample: bool | None = typer.Option(None, "--fold-upsample/--no-fold-upsample",
                                              help=_targets.option_help("fold_upsampling")),
    ort_format: bool = typer.Option(False, "--ort-format", help=_targets.option_help("ort_format")),
    nhwc: bool = typer.Option(False, "--nhwc", help=_targets.option_help("nhwc")),
    io: str | None = typer.Option(None, "--io", help=_targets.option_help("io")),
    compute_precision: str | None = typer.Option(None, help=_targets.option_help("compute_precision")),
    palettize: int | None = typer.Option(None, help=_targets.option_help("palettize")),
    activations: str | None = typer.Option(None, "--activations", help=_targets.option_help("activations")),
    build_engine: bool = typer.Option(False, "--build-engine", help=_targets.option_help("build_engine")),
    mixed_precision: bool | None = typer.Option(None, "--mixed-precision/--no-mixed-precision",
                                                help=_targets.option_help("mixed_precision")),
    accuracy_target: float | None = typer.Option(None, help=_targets.option_help("accuracy_target")),
    max_float_layers: int | None = typer.Option(None, help=_targets.option_help("max_float_layers")),
    float_layers: str | None = typer.Option(None, help=_targets.option_help("float_layers")),
    explain: bool = typer.Option(False, "--explain", help=_targets.option_help("explain")),
    intended_use: str | None = typer.Option(None, help=_targets.option_help("intended_use")),
    record: Path | None = typer.Option(None, "--record", help=_targets.option_help("record")),
    license_: str | None = typer.Option(None, "--license", help=_targets.option_help("license")),
    reference_frames: int | None = typer.Option(None, help=_targets.option_help("reference_frames")),
    measurements: str | None = typer.Option(None, "--measurements", help=_targets.option_help("measurements")),
    sign: Path | None = typer.Option(None, "--sign", help="Ed25519 private key PEM (pocus keygen): also write "
                                     "bundle.sig over the bundle digest (needs the sign extra)."),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_out: Path | None = json_option("the manifest"),
) -> None:
    """Export a model to a verified bundle (model file + manifest + parity report).

    Options a target or precision does not take are refused (the table in pocus_edge/export/targets.py).
    """
    from .export import export

    _setup_logging(quiet, verbose)
    for name, value in (("image_size", image_size), ("num_calib", num_calib), ("num_parity", num_parity)):
        if value is not None:
            check(name, value)
    if out is not None:
        check_out(out)
    if sign is not None:
        from .runtime.integrity import load_private_key

        load_private_key(sign)  # a wrong key fails now, not after the conversion
    if batch not in ("1", "dynamic"):
        raise PocusError(f"--batch {batch!r}: use 1 or dynamic")
    options = {"calibration_method": calib_method, "ort_format": ort_format, "nhwc": nhwc, "io": io,
               "compute_precision": compute_precision, "palettize": palettize, "build_engine": build_engine,
               "activations": activations,
               "mixed_precision": mixed_precision, "accuracy_target": accuracy_target,
               "max_float_layers": max_float_layers, "float_layers": float_layers, "explain": explain,
               "reference_frames": reference_frames}
    options.update(intended_use=intended_use, record=record, license=license_)  # the model record (record.py)
    manifest = export(model, target, precision, out, image_size=image_size, calib_data=calib_data,
                      parity_data=parity_data, dynamic_batch=batch == "dynamic", raw_input=raw_input,
                      parity=not no_parity, num_calib=num_calib, num_parity=num_parity,
                      parity_thresholds=_parse_thresholds(parity_threshold), overwrite=overwrite,
                      fold_upsampling=fold_upsample, sign_key=sign, measurements=measurements, **options)
    if not emit_json(json_out, manifest) and not quiet:
        _print_bundle(Path(manifest["bundle"]), manifest)


def _parse_thresholds(items: list[str] | None) -> dict[str, float]:
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            result[key.strip()] = float(value)
        except ValueError:
            raise PocusError(f"--parity-threshold {item!r}: expected METRIC=NUMBER, e.g. dice_mean=0.97")
    return result


def _print_bundle(bundle: Path, manifest: dict, seal=None) -> None:
    from rich.table import Table

    from .runtime.integrity import read_seal
    from .runtime.manifest import file_digest

    seal = seal or read_seal(bundle)

    size = sum(p.stat().st_size for name in manifest["files"] for p in
               ([bundle / name] if (bundle / name).is_file() else (bundle / name).rglob("*")) if p.is_file())
    parity = manifest.get("parity", {})
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in parity.get("metrics", {}).items())
    rows = [("bundle", str(bundle)), ("model", f"{manifest['name']} ({manifest['task']})"),
            ("target / precision", f"{manifest['target']} / {manifest['precision']}"),
            ("model file", manifest["model_file"]), ("size", f"{size / 1e6:.1f} MB"),
            ("input", f"{manifest['inputs'][0]['shape']} {manifest['inputs'][0]['dtype']} "
                      f"{manifest['inputs'][0]['layout']}"),
            ("output", f"{manifest['outputs'][0]['shape']} {manifest['outputs'][0]['meaning']}"),
            ("labels", ", ".join(manifest["labels"]) or "-"),
            ("parity", f"{parity.get('status', '?')}" + (f" ({parity['reason']})" if parity.get("reason") else "")
             + (f": {metrics}" if metrics else "")),
            ("flops", f"{manifest['flops'] / 1e9:.2f} GFLOP" if manifest.get("flops") else "-"),
            ("created", manifest["created_at"])]
    ok = all(file_digest(bundle / n) == h for n, h in manifest["files"].items() if (bundle / n).exists())
    rows.append(("checksums", "ok" if ok else "MISMATCH"))
    rows.append(("bundle digest", f"sha256:{seal.digest}"))
    rows.append(("signature", seal.describe()))
    smoke = manifest.get("smoke_test_only")
    rows.append(("smoke test only", "unknown (exported before the flag existed)" if smoke is None else
                 "YES: descends from random weights" if smoke else "no"))
    table = Table(title="pocus-edge bundle", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # the digest is shown whole
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
    if smoke:
        Console().print("[bold red]warning:[/bold red] smoke_test_only: this model descends from random weights; its "
                        "outputs carry no meaning (see MODEL_CARD.md, pocus info --card)", highlight=False)


@app.command()
def info(
    bundle: Path = typer.Argument(..., help="Bundle folder written by pocus-export."),
    card: bool = typer.Option(False, "--card", help="Print the bundle's MODEL_CARD.md (after verifying the bundle)."),
    json_out: Path | None = json_option("the manifest plus bundle_seal (digest, signing key)"),
    trusted_key: list[Path] = typer.Option(None, "--trusted-key", help="Ed25519 public key PEM; the bundle must be "
                                           "signed by one of these (repeatable)."),
) -> None:
    """Verify a bundle (schema, bundle digest, sha256 of every file, signature) and print what it holds."""
    from .runtime.manifest import inspect_bundle

    manifest, seal = inspect_bundle(bundle, trusted_key or None)
    if card:
        from .export.record import read_card_text

        print(read_card_text(bundle), end="")
        return
    if not emit_json(json_out, {**manifest, "bundle_seal": seal.to_json()}):
        _print_bundle(bundle, manifest, seal)


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder written by pocus-export."),
    backend: str | None = typer.Option(None, help="onnxruntime | tflite | coreml | tensorrt [the bundle's own]."),
    json_file: Path | None = json_option("the report (every frame's differences, the limits, run-to-run identity)"),
    trusted_key: list[Path] = typer.Option(None, "--trusted-key", help="Ed25519 public key PEM; the bundle must be "
                                           "signed by one of these (repeatable)."),
) -> None:
    """Self-test: run the bundle's reference vectors here and compare with the outputs recorded at export.

    Exit 0 when every frame is within the bundle's tolerances; 1, with one line naming the frame and the difference,
    when not; 2 when the bundle cannot be checked (tampered, no reference vectors, backend missing).
    """
    from .runtime.predictor import load
    from .runtime.selftest import run_selftest

    report = run_selftest(load(bundle, backend=backend, trusted_keys=trusted_key or None))
    if not emit_json(json_file, report.to_json()):
        typer.echo("\n".join(report.lines()))
    if not report.passed:
        typer.echo(report.failure_line(), err=True)
        raise typer.Exit(1)


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for pocus-signing-key.pem (private, mode 0600) and "
                             "pocus-signing-key.pub.pem (public)."),
) -> None:
    """Make an Ed25519 key pair for pocus-export --sign and --trusted-key (needs the sign extra)."""
    from .runtime.integrity import generate_keypair

    private, public, fingerprint = generate_keypair(out)
    console.print(f"private key {private} (keep it secret; pocus-export --sign)\npublic key  {public} "
                  f"(share it; --trusted-key)\nfingerprint {fingerprint}", highlight=False)


@app.command()
def predict(
    bundle: Path = typer.Argument(..., help="Bundle folder written by pocus-export."),
    images: list[Path] = typer.Argument(None, help="Image files (PNG/JPEG/BMP/TIFF/DICOM, single-frame or cine) "
                                        "or folders (recursive)."),
    video: Path | None = typer.Option(None, "--video", help="A cine loop (needs the video extra)."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Where masks, overlays and results.json go."),
    backend: str | None = typer.Option(None, help="onnxruntime | tflite | coreml | tensorrt [the bundle's own]."),
    threads: int | None = typer.Option(None, help="Inference threads [backend default]."),
    smooth: float = typer.Option(0.0, help="--video only: temporal smoothing of mask probabilities, 0..0.95."),
    trusted_key: list[Path] = typer.Option(None, "--trusted-key", help="Ed25519 public key PEM; refuse bundles "
                                           "not signed by one of these (repeatable)."),
    json_out: Path | None = json_option("the report (results.json's content)"),
    pixel_spacing: str | None = typer.Option(None, "--pixel-spacing", metavar="MM|ROW,COL", help="mm per pixel of "
                                             "the images and video as given: the bundle's measurements (area, "
                                             "ellipse) in mm (DICOM inputs use their own spacing)."),
    dicom_seg: bool = typer.Option(True, "--dicom-seg/--no-dicom-seg", help="DICOM inputs of a segmentation "
                                   "bundle: also write NAME_seg.dcm, a DICOM SEG (needs the dicom extra)."),
) -> None:
    """Run a bundle on images, folders or a video (torch-free) and write masks, overlays and JSON."""
    from .runtime.measure import parse_spacing
    from .runtime.predict import run_predict, summary_line

    if threads is not None:
        check("runtime_threads", threads, "--threads")
    check_out(out)
    report = run_predict(bundle, list(images or []), video, out, backend, threads, smooth,
                         trusted_keys=trusted_key or None, dicom_seg=dicom_seg,
                         pixel_spacing_mm=parse_spacing(pixel_spacing, "--pixel-spacing"))
    if not emit_json(json_out, report):
        console.print(f"{summary_line(report)}; written to {out}", highlight=False)


from .bench.commands import bench_app  # noqa: E402
from .data.commands import corpus_app  # noqa: E402
from .finetune.commands import register as _register_finetune  # noqa: E402
from .kd.commands import register as _register_kd  # noqa: E402

app.add_typer(bench_app, name="bench")
app.add_typer(corpus_app, name="corpus")
for _group in app.registered_groups:
    _group.typer_instance.rich_markup_mode = None  # plain help everywhere ("[256]" defaults are text, not markup)
_register_finetune(app)
_register_kd(app)


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
