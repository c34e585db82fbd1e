"""LightlyTrain's distillation for the side-by-side speed run (runs in the separate venv /work/lightly-venv).

The teacher is LightlyTrain's own DINOv3 ViT-B/16 (`dinov3/vitb16`), randomly initialised with a fixed seed and
handed over as a local weights file (`method_args.teacher_weights`), so nothing is downloaded. The student is
`timm/resnet50`, the one `pocus distill` trains. Prints one JSON line: the per-step wall times LightlyTrain
logged itself (`profiling/data_time` + `profiling/batch_time`, i.e. batch start to batch start).
Usage: /work/lightly-venv/bin/python lightly_run.py --data DIR --out DIR --image-size 224 --batch-size 16 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("LIGHTLY_TRAIN_EVENTS_DISABLED", "1")  # no telemetry calls: this machine is offline
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def random_teacher_file(path: Path, seed: int) -> Path:
    """LightlyTrain's DINOv3 ViT-B/16 with random weights, saved as the state dict its teacher loader reads."""
    from lightly_train._models.dinov3.dinov3_package import DINOV3_PACKAGE

    if not path.is_file():
        torch.manual_seed(seed)
        model = DINOV3_PACKAGE.get_model("vitb16", load_weights=False)
        torch.save(model.state_dict(), path)
    return path


def step_seconds(out: Path) -> list[float]:
    """Batch-start-to-batch-start seconds of every logged step (data wait + step), from LightlyTrain's metrics."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step: dict[int, dict] = {}
    for row in rows:
        by_step.setdefault(int(row.get("step", -1)), {}).update(row)
    times = []
    for step in sorted(by_step):
        row = by_step[step]
        if "profiling/batch_time" in row:
            times.append(float(row["profiling/batch_time"]) + float(row.get("profiling/data_time", 0.0)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--method", default="distillation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lightly_train

    out = Path(args.out)
    teacher = random_teacher_file(out.parent / "lightly_random_dinov3_vitb16.pt", seed=0)
    t0 = time.perf_counter()
    lightly_train.pretrain(
        out=str(out), data=args.data, model="timm/resnet50", method=args.method,
        method_args={"teacher": "dinov3/vitb16", "teacher_weights": str(teacher)},
        epochs=1000, batch_size=args.batch_size, num_workers=args.num_workers, devices=1, accelerator="cpu",
        precision="32-true", seed=0, overwrite=True, transform_args={"image_size": (args.image_size, args.image_size)},
        trainer_args={"max_steps": args.steps, "log_every_n_steps": 1},
    )
    wall = time.perf_counter() - t0
    print(json.dumps({"tool": "lightly-train", "version": lightly_train.__version__, "torch": torch.__version__,
                      "method": args.method, "step_seconds": step_seconds(out), "wall_seconds": round(wall, 2),
                      "batch_size": args.batch_size, "image_size": args.image_size, "threads": args.threads}))


if __name__ == "__main__":
    main()
