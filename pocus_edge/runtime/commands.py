"""`pocus predict`: run a bundle on images, folders or a video. Torch-free like the rest of the runtime: typer
and rich come with the base install."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_common import console, emit_json, json_option
from ..limits import check, check_out


def register(app: typer.Typer) -> None:
    """Add `pocus predict` to the `pocus` app."""
    app.command()(predict)


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
    from .measure import parse_spacing
    from .predict import run_predict, summary_line

    if threads is not None:
        check("runtime_threads", threads, "--threads")
    check_out(out)
    report = run_predict(bundle, list(images or []), video, out, backend, threads, smooth,
                         trusted_keys=list(trusted_key) if trusted_key else None, dicom_seg=dicom_seg,
                         pixel_spacing_mm=parse_spacing(pixel_spacing, "--pixel-spacing"))
    if not emit_json(json_out, report):
        console.print(f"{summary_line(report)}; written to {out}", highlight=False)
