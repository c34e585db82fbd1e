"""`pocus corpus scan|select`: look at a distillation corpus and choose a budget of frames from it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..cli_common import console, emit_json, json_option, quiet_option, setup_logging, verbose_option
from ..errors import ConfigError
from ..limits import check

corpus_app = typer.Typer(no_args_is_help=True, help="Distillation corpora: scan (duplicates, near duplicates) and "
                         "select a budget of frames (dual rank adapted from TinyUSFM, k-center, random).")

DATA_HELP = "Folder(s) or file(s) of unlabeled ultrasound, as for pocus distill (repeatable)."
CROP_HELP = ("Crop each frame to its ultrasound region (DICOM regions, else the largest bright component) so "
             "burned-in text and rulers are left out.")


@corpus_app.command("scan")
def scan(
    data: list[Path] = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="corpus.json to write (atomically)."),
    near_threshold: int = typer.Option(6, help="Near duplicate: perceptual hashes at most this many bits apart "
                                       "(0..32; -1 = do not look for near duplicates)."),
    max_video_frames: int = typer.Option(32, help="Frames sampled per video, as pocus distill."),
    crop_overlays: bool = typer.Option(False, "--crop-overlays", help=CROP_HELP),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_path: Path | None = json_option("the summary"),
) -> None:
    """List the frames pocus distill would read, with sha256s, sizes, skipped files, exact and near duplicates."""
    from .corpus_scan import check_threshold, scan_report, write_report

    setup_logging(quiet, verbose)
    check_threshold(near_threshold)
    _check_video_frames(max_video_frames)
    report = scan_report(list(data), near_threshold, max_video_frames, crop_overlays, quiet)
    write_report(out, report)
    summary = {k: v for k, v in report["summary"].items() if k != "per_folder"}
    if not emit_json(json_path, report["summary"]) and not quiet:
        console.print(f"{out}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()),
                      highlight=False)


@corpus_app.command("select")
def select(
    data: list[Path] = typer.Option(..., "--data", help=DATA_HELP),
    budget: str = typer.Option(..., "--budget", help="Frames to keep: a count (500) or a share of the usable "
                               "frames (25%)."),
    out: Path = typer.Option(..., "--out", "-o", help="Frame list to write (for distill --data-list, kd "
                             "--transfer-list); embeddings are cached in OUT.cache/."),
    method: str = typer.Option("dual-rank", help="dual-rank (adapted from TinyUSFM) | kcenter | random."),
    teacher_weights: str | None = typer.Option(None, help="Teacher: local .safetensors/.pth, or 'random' (smoke "
                                               "tests); needed by dual-rank and kcenter."),
    teacher: str = typer.Option("vit_base_patch16_dinov3", help="timm DINOv3/DINOv2 ViT, as pocus distill."),
    teacher_kwargs: str | None = typer.Option(None, help="JSON object passed to timm.create_model (e.g. depth for "
                                              "smoke tests), as distill's teacher_kwargs."),
    blocks: str | None = typer.Option(None, help="Teacher block indices, comma-separated [last two]."),
    aggregate: str = typer.Option("concat", help="concat | mean of the blocks' tokens."),
    image_size: int = typer.Option(256, help="Input size of teacher and proxy, multiple of 32."),
    seed: int = typer.Option(0, help="Seed of k-means, k-center, random and the proxy run."),
    near_threshold: int = typer.Option(6, help="Near duplicates removed first: hashes at most this many bits apart "
                                       "(0..32; -1 keeps them)."),
    clusters: int = typer.Option(0, help="dual-rank: k-means clusters (0 = round(sqrt(budget)), at most 256)."),
    distance_order: str = typer.Option("near", help="dual-rank: near (frames close to their cluster centre rank "
                                       "first) | far."),
    proxy_student: str = typer.Option("resnet18", help="dual-rank: student of the proxy run (timm CNN)."),
    proxy_epochs: int = typer.Option(3, help="dual-rank: epochs of the proxy run (>= 2)."),
    batch_size: int = typer.Option(32, help="Frames per teacher/proxy batch (memory)."),
    max_video_frames: int = typer.Option(32, help="Frames sampled per video, as pocus distill."),
    crop_overlays: bool = typer.Option(False, "--crop-overlays", help=CROP_HELP),
    exclude_eval_splits: list[Path] = typer.Option(None, "--exclude-eval-splits", help="Labelled folder whose "
                                                   "validation/test images (as pocus finetune seg and cls split it, "
                                                   "--eval-split-seed) must not be selected (repeatable), as distill."),
    eval_split_seed: int = typer.Option(0, help="Seed of the downstream fine-tunes' splits."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = default)."),
    device: str = typer.Option("auto", help="Where the teacher and the proxy run: auto (a CUDA GPU when one is "
                               "visible) | cpu | cuda | cuda:N."),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    json_path: Path | None = json_option("the summary"),
) -> None:
    """Choose --budget frames (near duplicates removed first); the same inputs and seed give the same list."""
    from .corpus_embed import ProxySpec, TeacherSpec
    from .corpus_select import SelectSettings, select_frames

    setup_logging(quiet, verbose)
    check("image_size", image_size, "--image-size")
    check("batch_size", batch_size, "--batch-size")
    check("threads", threads, "--threads")
    _check_video_frames(max_video_frames)
    spec = None
    if teacher_weights:
        spec = TeacherSpec(teacher, teacher_weights, _parse_kwargs(teacher_kwargs), _parse_blocks(blocks), aggregate,
                           True, image_size, seed)
    if threads:
        import torch

        torch.set_num_threads(threads)
    settings = SelectSettings(data=[str(d) for d in data], out=str(out), budget=budget, method=method, teacher=spec,
                              proxy=ProxySpec(student=proxy_student, epochs=proxy_epochs, batch_size=batch_size),
                              seed=seed, near_threshold=near_threshold, clusters=clusters,
                              distance_order=distance_order, batch_size=batch_size,
                              max_video_frames=max_video_frames, crop_overlays=crop_overlays, device=device,
                              exclude_eval_splits=[str(d) for d in exclude_eval_splits or []],
                              eval_split_seed=eval_split_seed, quiet=quiet)
    summary = select_frames(settings)
    if not emit_json(json_path, summary) and not quiet:
        console.print(f"{out}: {summary['selected']} of {summary['usable_frames']} frames ({method}; "
                      f"{summary['near_duplicates_removed']} near duplicates removed first)", highlight=False)


def _check_video_frames(value: int) -> None:
    if value < 1:
        raise ConfigError(f"--max-video-frames {value}: must be at least 1")


def _parse_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--teacher-kwargs {text!r}: not JSON ({exc.msg}); pass an object such as '{{\"depth\": 3}}'")
    if not isinstance(value, dict):
        raise ConfigError(f"--teacher-kwargs {text!r}: expected a JSON object such as '{{\"depth\": 3}}'")
    return value


def _parse_blocks(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--blocks {text!r}: expected comma-separated integers such as '10,11' or '-2,-1'")
