"""`pocus corpus select`: choose a budget of frames to distil on (dual rank, adapted from TinyUSFM; baselines).

Pipeline (every method): scan exactly as the distiller does (data/corpus_scan.py), drop near duplicates (greedy
pHash search, `near_threshold` bits; -1 keeps them), then choose `budget` frames from that pool; the list holds
absolute references (PATH or PATH#N) in scan order, with the settings in `#` header lines (data/frame_list.py).

- `dual-rank`: frozen-teacher embeddings (mean of patch tokens; data/corpus_embed.py), L2-normalised; k-means
  (k-means++ init from `seed`, Lloyd until no label changes or 100 iterations, an emptied cluster re-seeded with
  the point farthest from its centre); within each cluster a *distance rank* and a *quality rank*, merged by rank
  sum (ties: better quality rank, then scan order); each cluster gets a quota proportional to its size
  (largest remainders; ties to the lower cluster index) and is filled in merged-rank order.
- `kcenter`: k-center greedy on the same normalised embeddings, starting from a seeded random frame.
- `random`: a seeded uniform sample of the pool.

Choices where TINYUSFM.md leaves the detail open (all documented defaults, most settable):
- Budget `P%` is a share of the usable frames (what the distiller would read: after exact duplicates, before
  near-duplicate removal), rounded, at least 1; a budget larger than the pool left after near-duplicate
  removal is an error (lower --budget or --near-threshold), never silently capped.
- Clusters: `clusters` = 0 picks round(sqrt(budget)), between 1 and min(256, pool).
- Distance rank: `distance_order` "near" ranks frames close to their centre first (representative; outliers
  such as text screens or non-ultrasound frames rank last); "far" ranks the periphery first (harder examples,
  which Sorscher et al. 2022 found better when data is abundant). The benchmark decides; the default is "near".
- Quality rank: per-frame gradient norms of a short proxy run (data/corpus_embed.py); score =
  mean / (std + median over frames of the means). TinyUSFM ranks "high and stable" first, "strongly oscillating"
  lower and "low and flat" last; plain mean/std (TINYUSFM.md's shorthand) would rank low and flat first, so the
  denominator has a floor at the typical level: the level counts and oscillation costs. Needs >= 2 proxy epochs.
- k-means and k-center use Euclidean distance between unit vectors (cosine geometry).
Memory: embeddings live in a memmap; k-means and k-center read them in chunks of `CHUNK` rows.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..allocator import keep_freed_memory
from ..errors import ConfigError, DataError
from .corpus_embed import ProxySpec, TeacherSpec, embed_frames, proxy_gradient_norms, select_device
from .corpus_scan import DEFAULT_NEAR_THRESHOLD, check_threshold, progress_bar, scan_frames
from .frame_list import write_frame_list
from .phash import near_duplicates

log = logging.getLogger(__name__)

METHODS = ("dual-rank", "kcenter", "random")
DISTANCE_ORDERS = ("near", "far")
CHUNK = 8192
MAX_KMEANS_ITERATIONS = 100


def parse_budget(text: str, usable: int) -> int:
    """'500' -> 500 frames; '25%' -> 25 % of the usable frames (rounded, at least 1)."""
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1])
            if not 0 < share <= 100 or not math.isfinite(share):
                raise ValueError
            return max(1, round(usable * share / 100))
        count = int(raw)
        if count < 1:
            raise ValueError
        return count
    except ValueError:
        raise ConfigError(f"--budget {text!r}: use a frame count (500) or a share of the usable frames (25%), "
                          "greater than 0")


def proportional_quotas(sizes: list[int], budget: int) -> list[int]:
    """Split `budget` over clusters in proportion to their sizes (largest remainders, ties to the lower index)."""
    total = sum(sizes)
    exact = [budget * s / total for s in sizes]
    quotas = [math.floor(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[:budget - sum(quotas)]:
        quotas[c] += 1
    return quotas


def _unit_rows(x: np.ndarray) -> np.ndarray:
    block = np.asarray(x, dtype=np.float32)
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """N x K squared Euclidean distances, chunk by chunk over the rows of x (unit-normalised on the fly)."""
    out = np.empty((len(x), len(centres)), dtype=np.float32)
    c2 = (centres ** 2).sum(1)
    for start in range(0, len(x), CHUNK):
        block = _unit_rows(x[start:start + CHUNK])
        out[start:start + len(block)] = np.maximum((block ** 2).sum(1)[:, None] - 2 * block @ centres.T + c2, 0)
    return out


def _assign(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centre, its squared distance) per row, chunk by chunk: memory O(CHUNK x K), never N x K."""
    labels = np.empty(len(x), dtype=np.int64)
    own = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), CHUNK):
        dist = _squared_distances(x[start:start + CHUNK], centres)
        labels[start:start + len(dist)] = dist.argmin(1)
        own[start:start + len(dist)] = dist[np.arange(len(dist)), labels[start:start + len(dist)]]
    return labels, own


def _no_tick() -> None:
    return None


def kmeans(x: np.ndarray, k: int, seed: int, tick: Callable[[], None] = _no_tick) -> tuple[np.ndarray, np.ndarray]:
    """(labels, distance to own centre) of k-means on the unit-normalised rows of x (see the module docstring).

    `tick()` is called after each seeded centre and each Lloyd iteration (the progress bar).
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    centres = [_unit_rows(x[[int(rng.integers(n))]])[0]]
    nearest = _squared_distances(x, np.stack(centres))[:, 0]
    for _ in range(1, k):  # k-means++: next centre drawn with probability proportional to squared distance
        total = float(nearest.sum())
        pick = int(rng.choice(n, p=nearest / total)) if total > 0 else int(rng.integers(n))
        centres.append(_unit_rows(x[[pick]])[0])
        nearest = np.minimum(nearest, _squared_distances(x, centres[-1][None])[:, 0])
        tick()
    centres_arr = np.stack(centres).astype(np.float32)
    labels = np.full(n, -1)
    for _ in range(MAX_KMEANS_ITERATIONS):
        tick()
        new, own = _assign(x, centres_arr)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) == 0:  # re-seed an emptied cluster with the worst-fitting point
                far = int(own.argmax())
                centres_arr[c] = _unit_rows(x[[far]])[0]
                own[far] = 0.0
                continue
            total = np.zeros(x.shape[1], dtype=np.float64)
            for start in range(0, len(members), CHUNK):
                total += _unit_rows(x[members[start:start + CHUNK]]).sum(0)
            centres_arr[c] = (total / len(members)).astype(np.float32)
    labels, own = _assign(x, centres_arr)
    return labels, np.sqrt(own)


def quality_scores(norms: np.ndarray) -> np.ndarray:
    """mean / (std + median of the means) of each frame's gradient norms over the proxy epochs (higher = better)."""
    mean, std = norms.mean(1), norms.std(1)
    return mean / (std + float(np.median(mean)) + 1e-12)


def _rank(values: np.ndarray) -> np.ndarray:
    """0 for the smallest value; ties by position."""
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.lexsort((np.arange(len(values)), values))] = np.arange(len(values))
    return ranks


def dual_rank(labels: np.ndarray, distances: np.ndarray, quality: np.ndarray, budget: int,
              distance_order: str = "near") -> np.ndarray:
    """Positions chosen by rank sum within each cluster, clusters filled in proportion to their sizes."""
    clusters = sorted(set(labels.tolist()))
    members = [np.flatnonzero(labels == c) for c in clusters]
    quotas = proportional_quotas([len(m) for m in members], budget)
    chosen = []
    for idx, quota in zip(members, quotas, strict=True):
        d = distances[idx] if distance_order == "near" else -distances[idx]
        r_distance, r_quality = _rank(d), _rank(-quality[idx])
        order = np.lexsort((idx, r_quality, r_distance + r_quality))
        chosen.append(idx[order[:quota]])
    return np.sort(np.concatenate(chosen))


def kcenter(x: np.ndarray, budget: int, seed: int, tick: Callable[[], None] = _no_tick) -> np.ndarray:
    """k-center greedy on unit-normalised rows: repeatedly take the frame farthest from those taken (tick per pick)."""
    first = int(np.random.default_rng(seed).integers(len(x)))
    chosen = [first]
    nearest = _squared_distances(x, _unit_rows(x[[first]]))[:, 0]
    nearest[first] = -1.0
    for _ in range(1, budget):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = np.minimum(nearest, _squared_distances(x, _unit_rows(x[[pick]]))[:, 0])
        nearest[pick] = -1.0  # taken frames stay at -1 (the minimum keeps it), never picked again
        tick()
    return np.sort(np.array(chosen))


@dataclass
class SelectSettings:
    """Every setting of `pocus corpus select`."""

    data: list[str]
    out: str
    budget: str
    method: str = "dual-rank"
    teacher: TeacherSpec | None = None
    proxy: ProxySpec = field(default_factory=ProxySpec)
    seed: int = 0
    near_threshold: int = DEFAULT_NEAR_THRESHOLD
    clusters: int = 0
    distance_order: str = "near"
    batch_size: int = 32
    max_video_frames: int = 32
    crop_overlays: bool = False
    device: str = "auto"  # where the teacher and the proxy run: auto | cpu | cuda | cuda:N
    exclude_eval_splits: list[str] = field(default_factory=list)  # labelled folders whose val/test images to drop
    eval_split_seed: int = 0  # the --seed of the downstream fine-tunes those splits belong to
    quiet: bool = True

    def validate(self) -> SelectSettings:
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.distance_order not in DISTANCE_ORDERS:
            raise ConfigError(f"--distance-order {self.distance_order!r}: choose near or far")
        check_threshold(self.near_threshold)
        if self.method != "random" and self.teacher is None:
            raise ConfigError(f"--method {self.method} needs --teacher-weights (a local DINOv3 file, or 'random' "
                              "for smoke tests)")
        if self.method == "dual-rank" and self.proxy.epochs < 2:
            raise ConfigError(f"--proxy-epochs {self.proxy.epochs}: the quality rank needs at least 2 epochs (it "
                              "compares each frame's gradient over epochs)")
        if self.clusters < 0 or self.batch_size < 1:
            raise ConfigError("--clusters must be >= 0 (0 = auto) and --batch-size >= 1")
        return self


def select_frames(s: SelectSettings) -> dict:
    """Run the selection, write the list to `s.out` and return a summary (see the module docstring)."""
    s.validate()
    device = select_device(s.device) if s.method != "random" else None  # a bad --device fails before the scan
    out = Path(s.out)
    cache_dir = out.parent / f"{out.name}.cache"
    from ..finetune.data import eval_images_of

    keep_freed_memory()  # the proxy run trains a student: each step reuses the last one's memory
    exclude = eval_images_of(s.exclude_eval_splits, s.eval_split_seed)  # spend the budget on trainable frames only
    scanned = scan_frames([Path(d) for d in s.data], s.max_video_frames, s.crop_overlays, s.quiet,
                          exclude=exclude or None,
                          file_hashes=False)  # the pixel digests key the cache; the files' own sha256 is unused
    corpus = scanned.corpus
    near = near_duplicates(scanned.hashes, s.near_threshold) if s.near_threshold >= 0 else [None] * len(scanned.hashes)
    pool = np.array([i for i, dup in enumerate(near) if dup is None])
    budget = parse_budget(s.budget, len(corpus.frames))
    if budget > len(pool):
        raise DataError(f"--budget {s.budget} means {budget} frames, but only {len(pool)} of {len(corpus.frames)} "
                        f"usable frames are left after near-duplicate removal (--near-threshold {s.near_threshold}); "
                        "lower --budget, or --near-threshold (-1 keeps near duplicates)")
    frames = [corpus.frames[i] for i in pool]
    digests = hashlib.sha256("\n".join(corpus.frame_digests[i] for i in pool).encode()).hexdigest()
    key_parts = {"pool": digests, "max_video_frames": s.max_video_frames}
    clusters: list[dict] = []
    if s.method == "random":
        picked = np.sort(np.random.default_rng(s.seed).choice(len(pool), size=budget, replace=False))
    else:
        emb = embed_frames(frames, s.teacher, s.crop_overlays, cache_dir, key_parts, s.batch_size, s.quiet, device)
        if s.method == "kcenter":
            with progress_bar(s.quiet) as bar:
                task = bar.add_task("k-center", total=budget - 1)
                picked = kcenter(emb, budget, s.seed, lambda: bar.advance(task))
        else:
            norms = proxy_gradient_norms(frames, emb, s.teacher.image_size, s.crop_overlays, s.seed, s.proxy,
                                         cache_dir, {**key_parts, "teacher": s.teacher.identity()}, s.quiet,
                                         device)
            k = s.clusters or max(1, min(256, round(math.sqrt(budget))))
            k = min(k, len(pool))
            with progress_bar(s.quiet) as bar:
                task = bar.add_task("k-means (seeding, then iterations)", total=k - 1 + MAX_KMEANS_ITERATIONS)
                labels, distances = kmeans(emb, k, s.seed, lambda: bar.advance(task))
                bar.update(task, completed=k - 1 + MAX_KMEANS_ITERATIONS)
            picked = dual_rank(labels, distances, quality_scores(norms), budget, s.distance_order)
            taken = np.isin(np.arange(len(pool)), picked)
            clusters = [{"cluster": c, "size": int((labels == c).sum()), "selected": int(taken[labels == c].sum())}
                        for c in range(k)]
    chosen = pool[picked]
    refs = [_absolute_ref(corpus.frames[i]) for i in chosen]
    header = [f"pocus corpus select --method {s.method} --budget {s.budget} --seed {s.seed} "
              f"--near-threshold {s.near_threshold}" + (" --crop-overlays" if s.crop_overlays else ""),
              f"data: {' '.join(s.data)}",
              f"crop_overlays: {str(s.crop_overlays).lower()}",  # read back by keep_listed: train as selected
              *([f"eval images left out: {len(corpus.excluded)} (validation/test splits of "
                 f"{' '.join(s.exclude_eval_splits)}, --eval-split-seed {s.eval_split_seed})"]
                if s.exclude_eval_splits else []),
              f"{len(refs)} of {len(corpus.frames)} usable frames ({len(corpus.frames) - len(pool)} near duplicates "
              f"removed, {len(corpus.duplicates)} exact duplicates, {len(corpus.skipped)} skipped)"]
    write_frame_list(out, refs, header)
    log.info("selected %d of %d frames (%s) -> %s", len(refs), len(corpus.frames), s.method, out)
    return {"list": str(out), "method": s.method, "budget": budget, "selected": len(refs),
            "usable_frames": len(corpus.frames), "near_duplicates_removed": len(corpus.frames) - len(pool),
            "pool": len(pool), "exact_duplicates": len(corpus.duplicates), "skipped": len(corpus.skipped),
            "eval_images_left_out": len(corpus.excluded),
            "clusters": clusters, "cache": str(cache_dir) if s.method != "random" else None}


def _absolute_ref(ref) -> str:
    path = str(Path(ref.path).resolve())
    return path if ref.frame is None else f"{path}#{ref.frame}"
