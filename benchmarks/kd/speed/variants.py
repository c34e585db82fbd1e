"""Phone-class U-Net designs the registry cannot build yet, exported for latency only (benchmarks/kd/speed).

Each variant is a random-weight smp U-Net (BatchNorm re-randomised), saved with the ordinary `save_task_model`
card and exported by the project's own exporter (`pocus_edge.export.export`, what `pocus-export` calls) in this
process, with `registry.create_model` patched to rebuild exactly this variant when the exporter loads the
checkpoint. The patch lives only in this process; nothing in pocus_edge changes.

Usage: .venv/bin/python benchmarks/kd/speed/variants.py OUT_DIR NAME [NAME ...] [--size 128] [--calib DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

SLIM = (48, 32, 24, 16, 8)
# name -> (smp encoder, timm kwargs, decoder widths, output stride of the decoder: 1 full resolution, 2 half)
VARIANTS: dict[str, tuple[str, dict, tuple[int, ...], int]] = {
    "mnv3l-relu": ("tu-mobilenetv3_large_100", {"act_layer": "relu"}, SLIM, 1),  # hard-swish -> ReLU, SE kept
    "mnv3l-minimal": ("tu-tf_mobilenetv3_large_minimal_100", {"pad_type": ""}, SLIM, 1),  # no SE, no h-swish
    "mnv4s": ("tu-mobilenetv4_conv_small", {}, SLIM, 1),  # MobileNetV4-Conv-S: ReLU, no SE
    "efflite0": ("tu-efficientnet_lite0", {}, SLIM, 1),  # EfficientNet-Lite0: ReLU6, no SE
    "mnv3l-half": ("tu-mobilenetv3_large_100", {}, SLIM, 2),  # last (full-res) decoder stage dropped
    "mnv4s-half": ("tu-mobilenetv4_conv_small", {}, SLIM, 2),
    "r18-half": ("resnet18", {}, SLIM, 2),
    "mnv3l-minimal-half": ("tu-tf_mobilenetv3_large_minimal_100", {"pad_type": ""}, SLIM, 2),
}


class _KeepResolution(nn.Module):
    """Stands in for smp's last decoder block: returns its input (no upsampling, no convolutions)."""

    def forward(self, x, height=None, width=None, skip_connection=None):  # noqa: ARG002 - smp's block signature
        return x


def build(name: str) -> nn.Module:
    """The variant's U-Net with random weights and non-degenerate BatchNorm (nothing folds away at export)."""
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.base.heads import SegmentationHead

    from pocus_edge.models.tasks import randomize_batchnorm

    encoder, kwargs, widths, stride = VARIANTS[name]
    torch.manual_seed(0)
    net = smp.Unet(encoder_name=encoder, encoder_weights=None, classes=1, decoder_channels=widths, **kwargs)
    if stride == 2:  # the head runs at 1/2 resolution and its logits are upsampled x2 (bilinear)
        net.decoder.blocks[-1] = _KeepResolution()
        net.segmentation_head = SegmentationHead(widths[-2], 1, kernel_size=3, upsampling=2)
    return randomize_batchnorm(net, seed=0).eval()


def export_variant(name: str, out: Path, size: int, calib: Path) -> Path:
    """Checkpoint (save_task_model format) + int8 TFLite bundle of one variant; returns the bundle folder."""
    import pocus_edge.models.registry as registry
    from pocus_edge.export import export
    from pocus_edge.finetune.model import save_task_model

    net = build(name)
    ckpt = out / "ckpt" / name / "model.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    arch = "resnet18" if VARIANTS[name][0] == "resnet18" else "mobilenetv3_large_100"  # card field only
    cfg = SimpleNamespace(task="segmentation", architecture=arch, image_size=size, linear_probe=False,
                          label_fraction=1.0)
    init = {"origin": f"random init, speed-study variant {name}", "init_sha256": None,
            "decoder_channels": list(VARIANTS[name][2]), "smoke_test_only": True, "name": f"unet-{name}"}
    save_task_model(ckpt, net, cfg, ["background", "lesion"], init)
    bundle = out / f"b{size}" / name
    original = registry.create_model
    registry.create_model = lambda *a, **k: build(name)  # load_task_model rebuilds this variant
    try:
        export(str(ckpt), "tflite", "int8", bundle, image_size=size, calib_data=str(calib), num_calib=32,
               parity=False, overwrite=True)
    finally:
        registry.create_model = original
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("names", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--calib", type=Path, default=Path("/work/shared/data/hc18"))
    args = parser.parse_args()
    for name in args.names:
        if (args.out / f"b{args.size}" / name / "manifest.json").is_file():
            continue
        try:
            print(f"{name}: {export_variant(name, args.out, args.size, args.calib)}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a study: record the failure and go on with the next variant
            print(f"EXPORT FAILED: {name}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)


if __name__ == "__main__":
    main()
