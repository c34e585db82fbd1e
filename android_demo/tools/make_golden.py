"""Write golden vectors for the JVM core tests: pre-processed tensors and post-processed outputs computed by the
Python runtime (pocus_edge.runtime) for real ultrasound frames (../shared/data; synthetic phantoms when absent).

    python tools/make_golden.py OUT_DIR

Each case is OUT_DIR/NAME.json with the manifest, the image path (an 8-bit PNG the JVM decodes itself), the
expected model input, a synthetic model output, and the expected probabilities/mask/class probabilities.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np

from pocus_edge.runtime.images import load_gray
from pocus_edge.runtime.manifest import validate_manifest
from pocus_edge.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, model_input, resize_bilinear
from pocus_edge.runtime.results import output_as_float, postprocess

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "schema_version": 1, "name": "golden", "task": "segmentation", "target": "tflite", "precision": "fp32",
    "model_file": "model.tflite",
    "inputs": [{"name": "image", "shape": [1, 3, 48, 64], "dtype": "float32", "layout": "NCHW", "channels": 3,
                "value_range": [-2.1, 2.7]}],
    "preprocessing": {"image_size": [48, 64], "resize": "stretch", "interpolation": "bilinear_antialias",
                      "scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                      "gray_to_rgb": "replicate", "color_to_gray": "bt601_luma", "raw_input": False},
    "outputs": [{"name": "mask_logits", "shape": [1, 1, 48, 64], "dtype": "float32", "layout": "NCHW",
                 "meaning": "mask_logits"}],
    "postprocessing": {"activation": "sigmoid", "threshold": 0.5, "mask_resize": "bilinear_probabilities"},
    "labels": ["background", "lesion"], "files": {"model.tflite": "0" * 64},
    "source": {"model": "golden", "sha256": None, "architecture": "segmentation:resnet50"},
    "tool_versions": {"pocus-edge": "golden"}, "created_at": "2026-11-23T00:00:00+00:00",
}


def images() -> list[Path]:
    data = Path(os.environ.get("POCUS_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not data.is_dir():
        data = Path("/work/shared/data")
    found = []
    for sub, pattern in (("busi/images", "benign_00*.png"), ("hc18/images", "hc_00*.png")):
        found += sorted((data / sub).glob(pattern))[:1]
    if found:
        return found + [colour_frame(Path(sys.argv[1]))]
    from pocus_edge.data.phantoms import write_phantom_dataset

    folder = write_phantom_dataset(Path(sys.argv[1]) / "phantoms", 2, size=(150, 210), seed=4)
    return sorted((folder / "images").glob("*.png")) + [colour_frame(Path(sys.argv[1]))]


def colour_frame(out: Path) -> Path:
    """An RGB PNG whose channels differ (a Doppler-like overlay): gray comes from BT.601 luma in whole numbers, so
    the JVM must round exactly as the runtime does (BUSI's RGB files have equal channels and would not show it)."""
    from PIL import Image

    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path = out / "colour.png"
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path)
    return path


def smooth_field(shape: tuple[int, ...], seed: int, gain: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((shape[0], shape[-2] // 8 + 1, shape[-1] // 8 + 1)).astype(np.float32)
    return gain * resize_bilinear(noise, shape[-2], shape[-1])


def cases() -> dict[str, dict]:
    seg = copy.deepcopy(BASE)
    nhwc_int8 = copy.deepcopy(BASE)
    nhwc_int8["precision"] = "int8"
    nhwc_int8["inputs"][0].update(shape=[1, 48, 64, 3], dtype="int8", layout="NHWC",
                                  quantization={"scale": 0.0179679375, "zero_point": -10})
    nhwc_int8["outputs"][0].update(shape=[1, 48, 64, 1], dtype="int8", layout="NHWC",
                                   quantization={"scale": 0.05, "zero_point": 3})
    raw = copy.deepcopy(BASE)
    raw["inputs"][0].update(shape=[1, 1, 48, 64], channels=1, value_range=[0, 255])
    raw["preprocessing"].update(raw_input=True, gray_to_rgb="in_model")
    multi = copy.deepcopy(BASE)
    multi["outputs"][0]["shape"] = [1, 3, 48, 64]
    multi["postprocessing"]["activation"] = "softmax"
    multi["labels"] = ["background", "head", "abdomen"]
    cls = copy.deepcopy(BASE)
    cls.update(task="classification", labels=["benign", "malignant", "normal"])
    cls["outputs"][0].update(name="logits", shape=[1, 3], layout="NC", meaning="logits")
    cls["postprocessing"] = {"activation": "softmax", "threshold": None, "mask_resize": "none"}
    return {"seg_nchw_float": seg, "seg_nhwc_int8": nhwc_int8, "seg_raw_input": raw, "seg_multiclass": multi,
            "classification": cls}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for image_index, image in enumerate(images()):
        gray = load_gray(image)
        for name, manifest in cases().items():
            validate_manifest(manifest, name)
            x = model_input([gray], manifest)
            spec = manifest["outputs"][0]
            if manifest["task"] == "classification":
                raw_out = np.random.default_rng(image_index).standard_normal((1, 3)).astype(np.float32) * 2
            else:
                k = spec["shape"][1] if spec["layout"] == "NCHW" else spec["shape"][3]
                field = smooth_field((k, 48, 64), seed=image_index)[None]
                raw_out = field.transpose(0, 2, 3, 1) if spec["layout"] == "NHWC" else field
                if spec["dtype"] == "int8":
                    q = spec["quantization"]
                    raw_out = np.clip(np.rint(raw_out / q["scale"]) + q["zero_point"], -128, 127).astype(np.int8)
            result = postprocess(output_as_float(raw_out, manifest)[0], manifest, gray.shape)
            case = {"manifest": manifest, "image": str(image), "height": gray.shape[0], "width": gray.shape[1],
                    "input": x.reshape(-1).tolist(), "input_dtype": str(x.dtype),
                    "model_output": raw_out.reshape(-1).tolist(), "output_dtype": str(raw_out.dtype)}
            if manifest["task"] == "classification":
                case["probabilities"] = [result.probabilities[label] for label in manifest["labels"]]
            else:
                case["probabilities"] = result.probabilities.reshape(-1).tolist()
                case["mask"] = result.mask.reshape(-1).tolist()
                case["classes"] = int(result.probabilities.shape[0])
            (out / f"{name}_{image_index}.json").write_text(json.dumps(case))
            written += 1
    print(f"wrote {written} golden cases to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
