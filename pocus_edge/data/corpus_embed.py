"""The two torch steps of `pocus corpus select`: frozen-teacher embeddings and the proxy run's gradient statistics.

Both are cached in the cache folder beside `--out` (`LIST.cache/`) under a key that hashes everything they depend
on (the pool's pixel digests in order, the teacher and its weights' sha256, image size, crop, seed, proxy
settings), so a rerun with the same inputs reads them back instead of recomputing.

- Embeddings: each frame resized whole to image_size (the held-out transform of distill), normalised, through the
  frozen teacher; the mean of its patch tokens is the frame's embedding. Rows are written batch by batch into an
  N x D float32 `.npy` memmap, and the number of finished rows into a sidecar JSON after each batch, so memory
  stays at one batch and an interrupted run continues where it stopped.
- Proxy run (the quality signal): a small student (`proxy_student`, random init) + a 1x1-conv projection head,
  mean-pooled, regresses each frame's standardised embedding with a per-frame MSE for `epochs` epochs (AdamW,
  every frame once per epoch in a seeded order, no augmentation). For every frame and epoch we record the norm of
  the gradient of that frame's loss with respect to its projector output, taken before the step: for MSE this is
  2 * ||s - t|| / D, computed in closed form. Token-level targets would need the teacher again every epoch or an
  N x tokens x D cache; the pooled embedding is already on disk.

Both run on `device` (`pocus corpus select --device`: a CUDA GPU when one is visible, as distill), in fp32 so a
list does not depend on autocast.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write, atomic_write_json, sha256_file
from .corpus import FrameRef
from .corpus_scan import progress_bar


@dataclass(frozen=True)
class TeacherSpec:
    """The teacher options of `pocus distill`, as select takes them."""

    name: str
    weights: str
    kwargs: dict
    blocks: tuple[int, ...]
    aggregate: str
    norm: bool
    image_size: int
    seed: int

    def identity(self) -> dict:
        """What the embeddings depend on (a random teacher depends on the seed, a file on its bytes)."""
        path = Path(self.weights)
        weights = sha256_file(path) if path.is_file() else f"{self.weights} (seed {self.seed})"
        return {"teacher": self.name, "weights": weights, "kwargs": self.kwargs, "blocks": list(self.blocks),
                "aggregate": self.aggregate, "norm": self.norm, "image_size": self.image_size}


def select_device(name: str):
    """torch.device for `--device auto|cpu|cuda|cuda:N` (auto: the first CUDA GPU when one is visible)."""
    import torch

    from ..errors import ConfigError

    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {name}: no such CUDA GPU is visible here ({torch.cuda.device_count()} found); "
                          "use --device cpu or auto")
    return device


def cache_key(parts: dict) -> str:
    """A short hex key of a JSON-able dict."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _load_batch(frames: list[FrameRef], crop: bool, image_size: int):
    import torch

    from .overlay import read_cropped
    from .readers import read_frame
    from .transforms import eval_transform, normalize

    out = []
    for ref in frames:
        pixels = read_cropped(Path(ref.path), ref.frame) if crop else read_frame(Path(ref.path), ref.frame)
        img = torch.from_numpy(np.array(pixels, copy=True)).float().div_(255.0).unsqueeze(0)
        out.append(normalize(eval_transform(img, image_size)))
    return torch.stack(out)


def embed_frames(frames: list[FrameRef], spec: TeacherSpec, crop: bool, cache_dir: Path, key_parts: dict,
                 batch_size: int = 32, quiet: bool = True, device="cpu") -> np.ndarray:
    """N x D teacher embeddings (a read-only memmap), computed into the cache or read back from it."""
    key = cache_key({"step": "embeddings", "teacher": spec.identity(), "crop": crop, **key_parts})
    data_path, state_path = cache_dir / f"embeddings-{key}.npy", cache_dir / f"embeddings-{key}.json"
    done = 0
    if data_path.is_file() and state_path.is_file():
        done = int(json.loads(state_path.read_text()).get("rows_done", 0))
    if done >= len(frames):
        return np.load(data_path, mmap_mode="r")
    import torch

    from ..models.teacher import build_teacher

    torch.manual_seed(spec.seed)  # a random teacher is the same teacher on every rerun, as in distill
    teacher = build_teacher(spec.name, spec.weights, spec.image_size, list(spec.blocks) or None, spec.aggregate,
                            spec.norm, spec.kwargs).to(device)

    def embed(chunk: list[FrameRef]) -> np.ndarray:
        with torch.no_grad():
            return teacher(_load_batch(chunk, crop, spec.image_size).to(device)).mean(dim=1).float().cpu().numpy()

    cache_dir.mkdir(parents=True, exist_ok=True)
    if done == 0:
        probe = embed(frames[:1])
        rows = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.float32, shape=(len(frames), probe.shape[1]))
    else:
        rows = np.load(data_path, mmap_mode="r+")
    with progress_bar(quiet) as bar:
        task = bar.add_task("embed", total=len(frames), completed=done)
        for start in range(done, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            rows[start:start + len(chunk)] = embed(chunk)
            rows.flush()
            atomic_write_json(state_path, {"rows_done": start + len(chunk), "frames": len(frames), "key": key})
            bar.update(task, completed=start + len(chunk))
    del rows
    return np.load(data_path, mmap_mode="r")


def _standardised(embeddings: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all rows, in chunks (the memmap is never loaded whole)."""
    total = np.zeros(embeddings.shape[1])
    squares = np.zeros(embeddings.shape[1])
    for start in range(0, len(embeddings), chunk):
        block = np.asarray(embeddings[start:start + chunk], dtype=np.float64)
        total += block.sum(0)
        squares += (block ** 2).sum(0)
    mean = total / len(embeddings)
    std = np.sqrt(np.maximum(squares / len(embeddings) - mean ** 2, 0.0)) + 1e-6
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass(frozen=True)
class ProxySpec:
    """Settings of the proxy run."""

    student: str = "resnet18"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    head_hidden: int = 256


def proxy_gradient_norms(frames: list[FrameRef], embeddings: np.ndarray, image_size: int, crop: bool, seed: int,
                         proxy: ProxySpec, cache_dir: Path, key_parts: dict, quiet: bool = True,
                         device="cpu") -> np.ndarray:
    """N x epochs gradient norms of each frame's loss w.r.t. its projector output (see the module docstring)."""
    key = cache_key({"step": "proxy", "proxy": proxy.__dict__, "seed": seed, "image_size": image_size,
                     "crop": crop, **key_parts})
    path = cache_dir / f"proxy-{key}.npy"
    if path.is_file():
        return np.load(path)
    import torch
    from torch import nn

    from ..models.student import ProjectionHead, build_student, feature_channels

    torch.manual_seed(seed)
    encoder = build_student(proxy.student)
    channels, _ = feature_channels(encoder, image_size)
    head = ProjectionHead(channels, embeddings.shape[1], proxy.head_hidden)
    model = nn.ModuleDict({"encoder": encoder, "head": head}).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=proxy.lr, weight_decay=0.0)
    mean, std = _standardised(embeddings)
    norms = np.zeros((len(frames), proxy.epochs), dtype=np.float32)
    with progress_bar(quiet) as bar:
        task = bar.add_task("proxy run", total=len(frames) * proxy.epochs)
        for epoch in range(proxy.epochs):
            order = np.random.default_rng([seed, epoch]).permutation(len(frames))
            for start in range(0, len(frames), proxy.batch_size):
                index = np.sort(order[start:start + proxy.batch_size])
                images = _load_batch([frames[i] for i in index], crop, image_size).to(device)
                target = torch.from_numpy((np.asarray(embeddings[index]) - mean) / std).to(device)
                out = head(encoder.forward_features(images)).mean(dim=(2, 3))
                residual = out - target
                norms[index, epoch] = (2.0 * residual.detach().norm(dim=1) / residual.shape[1]).cpu().numpy()
                loss = residual.pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.advance(task, len(index))
    atomic_write(path, lambda tmp: _save_npy(tmp, norms))
    return norms


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save on a name would append .npy to the temp name
        np.save(f, array)
