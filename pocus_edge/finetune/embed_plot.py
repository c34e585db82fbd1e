"""`pocus embed-plot`: t-SNE of encoder embeddings coloured by dataset (the paper's Fig. 2).

One panel per encoder; each dataset folder contributes up to N frames (deterministic subsample). The
embedding is the encoder's global-average-pooled final feature map, L2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..models.inference import frame_outputs
from ..runtime.preprocess import normalization


def _frames(folder: Path, per_dataset: int) -> list[np.ndarray]:
    from ..data.corpus import scan_corpus
    from ..data.readers import read_frame
    from ..runtime.images import to_gray01

    refs = scan_corpus([folder]).frames
    if len(refs) > per_dataset:
        keep = np.random.default_rng(0).choice(len(refs), per_dataset, replace=False)
        refs = [refs[i] for i in sorted(keep)]
    return [to_gray01(read_frame(Path(r.path), r.frame)) for r in refs]


def _encoder(spec: str, architecture: str) -> tuple[str, torch.nn.Module]:
    from ..models.registry import create_model

    model = create_model("embedding", architecture)
    if spec == "random":
        torch.manual_seed(0)
        return "R50-Rand", model.eval()
    from ..models.encoder_io import load_encoder_state

    state, _ = load_encoder_state(Path(spec))
    model.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    return Path(spec).parent.name or Path(spec).stem, model.eval()


def embed_plot(encoders: list[str], data: list[Path], out: Path, per_dataset: int = 100, image_size: int = 224,
               architecture: str = "resnet50", seed: int = 0) -> dict:
    """Write the figure to OUT and return {encoder: {dataset: count}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if not encoders or not data:
        raise ConfigError("give at least one --encoder and one --data folder")
    pre = normalization(image_size)
    frames = {Path(d).name: _frames(Path(d), per_dataset) for d in data}
    fig, axes = plt.subplots(1, len(encoders), figsize=(5 * len(encoders), 4.5), squeeze=False)
    counts = {}
    for ax, spec in zip(axes[0], encoders, strict=True):
        name, model = _encoder(spec, architecture)
        vectors, owners = [], []
        for dataset, images in frames.items():
            vectors.append(frame_outputs(model, images, pre))
            owners += [dataset] * len(images)
        points = TSNE(n_components=2, perplexity=min(30, len(owners) - 1), random_state=seed,
                      init="pca").fit_transform(np.concatenate(vectors))
        for dataset in frames:
            sel = np.array([o == dataset for o in owners])
            ax.scatter(points[sel, 0], points[sel, 1], s=6, label=dataset)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        counts[name] = {d: len(v) for d, v in frames.items()}
    axes[0][0].legend(markerscale=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return counts
