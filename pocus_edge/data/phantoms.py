"""Synthetic B-mode speckle phantoms with lesions and masks: the embedded default data set.

A phantom is built the way a B-mode image forms: an echogenicity map (tissue layers, lesions)
multiplies complex Gaussian scatterers, which are blurred by an anisotropic point-spread
function (finer axially than laterally) and envelope-detected, giving Rayleigh speckle; then
depth attenuation with time-gain compensation, log compression to 8 bits, and the probe's
field of view (a fan for a sector/convex probe, a rectangle for a linear probe). Every image
is a pure function of its seed. Phantoms are for fast tests and the demo, not for claims about
real ultrasound.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GEOMETRIES = ("sector", "linear")


@dataclass(frozen=True)
class Phantom:
    """One synthetic frame: 8-bit image, 0/1 lesion mask, field-of-view mask and lesion kind."""

    image: np.ndarray
    mask: np.ndarray
    field_of_view: np.ndarray
    geometry: str
    label: str


def _gaussian_kernel_fft(shape: tuple[int, int], sigma_y: float, sigma_x: float) -> np.ndarray:
    """Frequency response of a separable Gaussian blur, for circular convolution by FFT."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return np.exp(-2 * np.pi**2 * ((sigma_y * fy) ** 2 + (sigma_x * fx) ** 2))


def _blur(field: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    return np.fft.ifft2(np.fft.fft2(field) * _gaussian_kernel_fft(field.shape, sigma_y, sigma_x))


def _field_of_view(height: int, width: int, geometry: str) -> np.ndarray:
    """Boolean mask of the imaged region: a fan from an apex above the top edge, or a rectangle."""
    if geometry == "linear":
        fov = np.zeros((height, width), dtype=bool)
        margin = width // 10
        fov[:, margin : width - margin] = True
        return fov
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    apex_y, apex_x = -0.15 * height, width / 2
    radius = np.hypot(yy - apex_y, xx - apex_x)
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    return (np.abs(angle) < np.deg2rad(38)) & (radius > 0.2 * height) & (radius < 1.12 * height)


def _echogenicity(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Tissue map: smooth horizontal layers of different brightness with gentle undulation."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    n_layers = int(rng.integers(2, 5))
    bounds = np.sort(rng.uniform(0.1, 0.9, n_layers))
    levels = rng.uniform(0.35, 1.0, n_layers + 1)
    wobble = 0.03 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2.0) + rng.uniform()))
    layer_index = np.searchsorted(bounds, (yy + wobble).ravel()).reshape(height, width)
    return levels[layer_index]


def make_phantom(seed: int, size: tuple[int, int] = (256, 256), geometry: str = "sector") -> Phantom:
    """Build one phantom deterministically from `seed` (same seed, same pixels, on any machine)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    height, width = size
    rng = np.random.default_rng(seed)
    fov = _field_of_view(height, width, geometry)
    echo = _echogenicity(height, width, rng)

    mask = np.zeros((height, width), dtype=np.uint8)
    label = str(rng.choice(["normal", "hypoechoic", "hyperechoic"], p=[0.2, 0.5, 0.3]))
    if label != "normal":
        ys, xs = np.nonzero(fov[int(0.3 * height) : int(0.85 * height)])
        pick = rng.integers(len(ys))
        cy, cx = ys[pick] + int(0.3 * height), xs[pick]
        ry, rx = rng.uniform(0.06, 0.16, 2) * np.array([height, width])
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        lesion = (u**2 + v**2 <= 1.0) & fov
        mask[lesion] = 1
        echo = np.where(lesion, echo * (0.15 if label == "hypoechoic" else 2.2), echo)

    scatter = rng.standard_normal((height, width)) + 1j * rng.standard_normal((height, width))
    envelope = np.abs(_blur(scatter * echo, sigma_y=0.8, sigma_x=1.8))
    depth = np.linspace(0.0, 1.0, height)[:, None]
    envelope *= np.exp(-1.2 * depth) * (1.0 + 0.9 * depth)  # attenuation, partly compensated by TGC
    db = 20 * np.log10(envelope / np.percentile(envelope[fov], 99.5) + 1e-6)
    image = np.clip((db + 45.0) / 45.0, 0.0, 1.0) * 255.0
    image = np.where(fov, image, 0.0).round().astype(np.uint8)
    return Phantom(image=image, mask=mask, field_of_view=fov, geometry=geometry, label=label)


def write_phantom_dataset(
    out_dir: Path, count: int, size: tuple[int, int] = (256, 256), seed: int = 0
) -> Path:
    """Write `count` phantoms as images/, masks/ and manifest.csv (the layout of ../shared/data/busi)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        geometry = GEOMETRIES[i % len(GEOMETRIES)]
        phantom = make_phantom(seed * 1_000_003 + i, size=size, geometry=geometry)
        name = f"phantom_{i:04d}.png"
        Image.fromarray(phantom.image).save(out_dir / "images" / name)
        Image.fromarray(phantom.mask * 255).save(out_dir / "masks" / name)
        rows.append(
            {
                "file": f"images/{name}",
                "mask": f"masks/{name}",
                "label": phantom.label,
                "geometry": geometry,
                "case_id": f"{i:04d}",
            }
        )
    with open(out_dir / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out_dir
