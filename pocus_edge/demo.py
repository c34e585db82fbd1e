"""`pocus demo`: the spine end to end on the embedded default (synthetic phantoms), in a few minutes on 2 cores.

The spine: phantoms -> short distillation (random ViT-S/16 DINOv3 teacher, ResNet-50 student, 128 px) ->
student.safetensors + card, reloaded into timm's resnet50 -> exported as an ONNX embedding bundle with parity
against PyTorch -> run by the torch-free runtime on a phantom frame.
"""

from __future__ import annotations

import time
from pathlib import Path

from .data.phantoms import write_phantom_dataset
from .distill.config import DistillConfig

DEMO_IMAGES = 96


def demo_config(data: Path, out: Path, steps: int, quiet: bool) -> DistillConfig:
    """A CPU-sized distillation: small random teacher, real ResNet-50 student, 128 px, batch 16."""
    return DistillConfig(
        data=[str(data)], out=str(out / "distill"), teacher="vit_small_patch16_dinov3", teacher_weights="random",
        student="resnet50", head_hidden=1024, image_size=128, batch_size=16, max_steps=steps, lr=5e-4,
        warmup_steps=max(1, steps // 10), save_every=str(max(1, steps // 2)), keep_last=1, log_every=5,
        held_out_fraction=0.15, num_workers=0, seed=0, quiet=quiet,
    )


def run_demo(out: Path, data: Path | None, steps: int, quiet: bool) -> dict:
    """Generate phantoms (unless --data), distil, reload the student into timm; return a summary."""
    import shutil

    from .distill.trainer import run_distillation
    from .models.encoder_io import load_encoder_state
    from .models.registry import timm_encoder

    t0 = time.perf_counter()
    out = Path(out)
    if (out / "distill").exists():
        shutil.rmtree(out / "distill")
    if data is None:
        data = write_phantom_dataset(out / "phantoms", DEMO_IMAGES, size=(192, 192), seed=0)
    summary = run_distillation(demo_config(Path(data), out, steps, quiet))
    state, card = load_encoder_state(out / "distill" / "student.safetensors")
    encoder = timm_encoder(card["architecture"])  # the registry's timm model: timm's own key names
    result = encoder.load_state_dict(state, strict=True)
    bundle = _export_and_run(out, Path(data))
    return {
        "data": str(data),
        "train_images": summary["train_images"],
        "held_out_images": summary["held_out_images"],
        "distill_steps": summary["steps"],
        "held_out_r2_start": summary["held_out_r2_start"],
        "held_out_r2_end": summary["held_out_r2_end"],
        "student": str(out / "distill" / "student.safetensors"),
        "student_loads_into_timm": not result.missing_keys and not result.unexpected_keys,
        **bundle,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _export_and_run(out: Path, data: Path) -> dict:
    """Export the student as an ONNX embedding bundle (parity on the phantoms) and run it through the runtime."""
    from .export import export
    from .runtime import load

    manifest = export(str(out / "distill" / "student.safetensors"), "onnx", "fp32", out / "bundle-onnx",
                      parity_data=data, num_parity=16, overwrite=True)
    image = sorted((data / "images").glob("*.png"))[0] if (data / "images").is_dir() else None
    predictor = load(out / "bundle-onnx", threads=1)
    embedding = predictor(image) if image is not None else None
    return {"bundle": str(out / "bundle-onnx"), "bundle_parity": manifest["parity"]["status"],
            "bundle_cosine_min": manifest["parity"]["metrics"].get("cosine_min"),
            "runtime_embedding_dim": int(embedding.vector.shape[0]) if embedding is not None else None}
