"""`pocus export` (also `pocus-export`), `pocus info`, `pocus verify` and `pocus keygen`: make a bundle, show and
check it, and make the key pair that signs it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..cli_common import (
    console,
    emit_json,
    json_option,
    quiet_option,
    setup_logging,
    verbose_option,
)
from ..errors import PocusError
from ..limits import check, check_out
from . import targets as _targets  # the capability table (light): export's help comes from it


def register(app: typer.Typer) -> None:
    """Add the bundle commands to the `pocus` app."""
    app.command("export")(export_cmd)
    app.command()(info)
    app.command()(verify)
    app.command()(keygen)


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
    from .api import export_config
    from .base import ExportConfig

    setup_logging(quiet, verbose)
    for name, value in (("image_size", image_size), ("num_calib", num_calib), ("num_parity", num_parity)):
        if value is not None:
            check(name, value)
    if out is not None:
        check_out(out)
    if sign is not None:
        from ..runtime.integrity import load_private_key

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
    config = ExportConfig(model, target, precision, out, image_size=image_size, calib_data=calib_data,
                          parity_data=parity_data, dynamic_batch=batch == "dynamic", raw_input=raw_input,
                          parity=not no_parity, num_calib=num_calib, num_parity=num_parity,
                          parity_thresholds=_parse_thresholds(parity_threshold), overwrite=overwrite,
                          fold_upsampling=fold_upsample, sign_key=sign, measurements=measurements, options=options)
    manifest = export_config(config)
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

    from ..runtime.integrity import read_seal
    from ..runtime.manifest import file_digest

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


def info(
    bundle: Path = typer.Argument(..., help="Bundle folder written by pocus-export."),
    card: bool = typer.Option(False, "--card", help="Print the bundle's MODEL_CARD.md (after verifying the bundle)."),
    json_out: Path | None = json_option("the manifest plus bundle_seal (digest, signing key)"),
    trusted_key: list[Path] = typer.Option(None, "--trusted-key", help="Ed25519 public key PEM; the bundle must be "
                                           "signed by one of these (repeatable)."),
) -> None:
    """Verify a bundle (schema, bundle digest, sha256 of every file, signature) and print what it holds."""
    from ..runtime.manifest import inspect_bundle

    manifest, seal = inspect_bundle(bundle, trusted_key or None)
    if card:
        from .record import read_card_text

        print(read_card_text(bundle), end="")
        return
    if not emit_json(json_out, {**manifest, "bundle_seal": seal.to_json()}):
        _print_bundle(bundle, manifest, seal)


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
    from ..runtime.predictor import load
    from ..runtime.selftest import run_selftest

    report = run_selftest(load(bundle, backend=backend, trusted_keys=trusted_key or None))
    if not emit_json(json_file, report.to_json()):
        typer.echo("\n".join(report.lines()))
    if not report.passed:
        typer.echo(report.failure_line(), err=True)
        raise typer.Exit(1)


def keygen(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for pocus-signing-key.pem (private, mode 0600) and "
                             "pocus-signing-key.pub.pem (public)."),
) -> None:
    """Make an Ed25519 key pair for pocus-export --sign and --trusted-key (needs the sign extra)."""
    from ..runtime.integrity import generate_keypair

    private, public, fingerprint = generate_keypair(out)
    console.print(f"private key {private} (keep it secret; pocus-export --sign)\npublic key  {public} "
                  f"(share it; --trusted-key)\nfingerprint {fingerprint}", highlight=False)
