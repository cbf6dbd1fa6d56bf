"""Deterministic LocoWorld renderer: one object on black, signed distances, 4x4 supersampling.

Coordinates are in [-1, 1] with y pointing up; an object spans roughly [-0.75, 0.75] in its own
(unjittered) frame. Styles modulate an intensity in {0, 0.3, 1} inside the silhouette; the 30%
background of striped and dotted keeps the silhouette visible at 16 px and stays below the colour
reader's brightness threshold (90 of 255).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from loco_lightning.data.world.vocab import Vocabulary, default_vocabulary

SUPERSAMPLE = 4
OUTLINE_WIDTH = 0.2  # ~1.6 px at 16 px
STRIPE_PERIOD = 0.5  # bright and dim stripes ~2 px each
DOT_SPACING, DOT_RADIUS = 0.42, 0.14
DIM = 0.3


@dataclass(frozen=True)
class Scene:
    """One object: attribute values by name plus a small pose jitter (identity by default).

    Attributes:
        dx, dy: centre offset in image units ([-1, 1] spans the image).
        scale: size multiplier.
        angle: rotation in radians (counter-clockwise).
    """

    shape: str
    colour: str
    style: str
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    angle: float = 0.0


def sample_scene(
    rng: np.random.Generator, vocab: Vocabulary | None = None, jitter: float = 1.0, **fixed: str
) -> Scene:
    """Draw a uniform scene; `fixed` pins attribute values (e.g. `shape="circle"`).

    `jitter` scales the pose noise (1.0: centre +-0.5 px, size +-5%, rotation +-8 degrees at
    16 px); 0 gives the canonical pose. The draw order is fixed so (rng state) -> scene is stable.
    """
    vocab = vocab or default_vocabulary()
    values = {
        a: vocab.values(a)[rng.integers(len(vocab.values(a)))] for a in ("shape", "colour", "style")
    }
    values.update(fixed)
    dx, dy, ds, da = (float(u) * jitter for u in rng.uniform(-1.0, 1.0, size=4))
    return Scene(**values, dx=0.0625 * dx, dy=0.0625 * dy, scale=1.0 + 0.05 * ds, angle=0.14 * da)


def _polygon_sdf(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact signed distance to a closed polygon (negative inside); after Inigo Quilez."""
    vi, vj = verts[:, :, None, None], np.roll(verts, 1, axis=0)[:, :, None, None]
    ex, ey = vj[:, 0] - vi[:, 0], vj[:, 1] - vi[:, 1]  # (V, 1, 1) edges
    wx, wy = x - vi[:, 0], y - vi[:, 1]  # (V, H, W)
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.sqrt(((wx - ex * t) ** 2 + (wy - ey * t) ** 2).min(axis=0))
    c1, c2, c3 = y >= vi[:, 1], y < vj[:, 1], ex * wy > ey * wx
    crossings = ((c1 & c2 & c3) | ~(c1 | c2 | c3)).sum(axis=0)  # odd inside
    return np.where(crossings % 2 == 1, -dist, dist)


def _heart_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact heart (tip down) after Inigo Quilez, rescaled to about [-0.75, 0.75]."""
    k = 1.4
    x, y = np.abs(x) / k, y / k + 0.53
    upper = np.hypot(x - 0.25, y - 0.75) - np.sqrt(2.0) / 4.0
    s = 0.5 * np.maximum(x + y, 0.0)
    lower = np.sqrt(np.minimum(x * x + (y - 1.0) ** 2, (x - s) ** 2 + (y - s) ** 2))
    return k * np.where(x + y > 1.0, upper, lower * np.sign(x - y))


def _star(outer: float, inner: float, shift: float) -> np.ndarray:
    a = np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a) - shift], axis=1)


def _cross(arm: float, half: float) -> np.ndarray:
    quarter = np.array([[half, half], [half, arm], [-half, arm]])
    turn = np.array([[0.0, 1.0], [-1.0, 0.0]])  # (x, y) -> (-y, x)
    return np.concatenate([quarter @ np.linalg.matrix_power(turn, k) for k in range(4)])


_POLYGONS = {
    "square": np.array([[-0.62, -0.62], [0.62, -0.62], [0.62, 0.62], [-0.62, 0.62]]),
    "triangle": np.array([[0.0, 0.78], [-0.85, -0.7], [0.85, -0.7]]),
    "cross": _cross(0.75, 0.27),
    "star": _star(0.88, 0.4, 0.08),
}
_POLYGONS = {k: v.astype(np.float32) for k, v in _POLYGONS.items()}
SHAPE_SDFS = {
    "circle": lambda x, y: np.hypot(x, y) - 0.72,
    "heart": _heart_sdf,
    **{name: (lambda x, y, v=v: _polygon_sdf(x, y, v)) for name, v in _POLYGONS.items()},
}


def _style_intensity(style: str, d: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    inside = d < 0
    if style == "filled":
        return inside.astype(np.float32)
    if style == "outline":
        return (inside & (d > -OUTLINE_WIDTH)).astype(np.float32)
    if style == "striped":
        bright = np.floor(y / (STRIPE_PERIOD / 2) + 0.5) % 2 == 0
    elif style == "dotted":
        gx = x - DOT_SPACING * np.round(x / DOT_SPACING)
        gy = y - DOT_SPACING * np.round(y / DOT_SPACING)
        bright = gx * gx + gy * gy < DOT_RADIUS**2
    else:
        raise ValueError(
            f"unknown style {style!r}; the renderer draws filled/outline/striped/dotted"
        )
    return inside * np.where(bright, 1.0, DIM).astype(np.float32)


@cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    n = size * SUPERSAMPLE
    u = ((np.arange(n) + 0.5) / n * 2.0 - 1.0).astype(np.float32)
    x, y = np.meshgrid(u, -u)  # row 0 is the top of the image: y up
    x.flags.writeable = y.flags.writeable = False
    return x, y


def render(scene: Scene, size: int = 16, vocab: Vocabulary | None = None) -> np.ndarray:
    """Render a scene to a (size, size, 3) uint8 image; `vocab` supplies the colour palette.

    Pure function of its arguments (no randomness), ~0.3 ms at 16 px.
    """
    if scene.shape not in SHAPE_SDFS:
        raise ValueError(f"unknown shape {scene.shape!r}; the renderer draws {sorted(SHAPE_SDFS)}")
    vocab = vocab or default_vocabulary()
    rgb = np.asarray(vocab.rgb[vocab.index("colour", scene.colour)], dtype=np.float32)
    gx, gy = _grid(size)
    c, s = math.cos(scene.angle), math.sin(scene.angle)  # Python floats keep float32 arrays
    px, py = (gx - scene.dx) / scene.scale, (gy - scene.dy) / scene.scale
    x, y = c * px + s * py, -s * px + c * py  # object frame (rotate by -angle)
    d = SHAPE_SDFS[scene.shape](x, y)
    intensity = _style_intensity(scene.style, d, x, y)
    pixel = intensity.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return np.rint(pixel[..., None] * rgb).astype(np.uint8)
