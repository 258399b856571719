"""Geometry helpers and the :class:`Scene` that recipes paint anatomy into.

A scene holds, at image resolution, the tissue property maps that
:func:`physics.simulate_bmode` turns into an image (echogenicity, attenuation, specular
reflectors) and the label map (class index per pixel). Painting a structure writes all of
them at once, so the label always follows from what is drawn.

Lengths are given as fractions of the scan depth (``scene.unit`` pixels) and positions in
beam coordinates (depth ``r``, lateral ``t``, both 0..1), so a recipe looks the same on any
probe and image size.
"""
from __future__ import annotations

import cv2
import numpy as np

from .physics import TISSUE_ATTENUATION, Probe

#: Fixed-point bits used when rasterising polygons (sub-pixel accuracy).
_SHIFT = 4

# Echogenicity levels (scatterer power relative to average soft tissue).
ANECHOIC = 0.004  # clear fluid: blood, urine, bile, amniotic fluid, cyst
ISOECHOIC = 1.0
# Attenuation levels (nepers per full depth), compare physics.TISSUE_ATTENUATION.
FLUID_ATTENUATION = 0.1
BONE_ATTENUATION = 250.0


def ellipse_points(center: tuple[float, float], axes: tuple[float, float], angle_deg: float = 0.0,
                   n: int = 72) -> np.ndarray:
    """``n x 2`` points on an ellipse (semi-axes ``axes``, rotated by ``angle_deg``
    counter-clockwise as seen on screen, i.e. with y pointing down)."""
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return transform(np.stack([axes[0] * np.cos(phi), axes[1] * np.sin(phi)], axis=1),
                     center, angle_deg)


def blob_points(center: tuple[float, float], axes: tuple[float, float], angle_deg: float,
                rng: np.random.Generator, lobulation: float = 0.08, spicules: float = 0.0,
                n: int = 96) -> np.ndarray:
    """An irregular closed contour: an ellipse whose radius is modulated by a few random
    low-frequency harmonics (``lobulation``, smooth bumps) and, optionally, by many sharp
    high-frequency spikes (``spicules``, the margin of an infiltrating lesion)."""
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    for k in range(2, 6):
        radius += lobulation / k * rng.standard_normal() * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    if spicules > 0:
        spikes = rng.uniform(0.0, 1.0, n) ** 4 * spicules * rng.choice([0.0, 1.0], n, p=[0.4, 0.6])
        radius += spikes
    radius = np.clip(radius, 0.4, None)
    local = np.stack([axes[0] * radius * np.cos(phi), axes[1] * radius * np.sin(phi)], axis=1)
    return transform(local, center, angle_deg)


def transform(points: np.ndarray, center: tuple[float, float], angle_deg: float) -> np.ndarray:
    """Rotate local ``points`` by ``angle_deg`` (counter-clockwise on screen) and move them to ``center``."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.asarray(points, dtype=np.float64) @ rot + np.asarray(center, dtype=np.float64)


def direction(angle_deg: float) -> np.ndarray:
    """Unit vector of ``angle_deg`` counter-clockwise from +x as seen on screen (y down)."""
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), -np.sin(a)])


def _fixed(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)]


class Scene:
    """Tissue property maps and labels of one image, painted by a recipe."""

    def __init__(self, probe: Probe, rng: np.random.Generator):
        self.probe = probe
        self.rng = rng
        shape = (probe.height, probe.width)
        self.echo = np.full(shape, ISOECHOIC, np.float32)
        self.attenuation = np.full(shape, TISSUE_ATTENUATION, np.float32)
        self.specular = np.zeros(shape, np.float32)
        self.label = np.zeros(shape, np.uint8)

    @property
    def unit(self) -> float:
        """Scan depth in pixels; sizes in recipes are fractions of it."""
        return self.probe.depth_px

    def at(self, r: float, t: float) -> np.ndarray:
        """Pixel ``(x, y)`` of beam coordinates (depth ``r``, lateral ``t``)."""
        x, y = self.probe.to_xy(r, t)
        return np.array([float(x), float(y)])

    def random_point(self, r: tuple[float, float], t: tuple[float, float]) -> np.ndarray:
        """A pixel position drawn uniformly in the beam-coordinate box ``r`` x ``t``."""
        return self.at(self.rng.uniform(*r), self.rng.uniform(*t))

    def texture(self, scale: float = 0.08, strength: float = 0.35) -> np.ndarray:
        """A smooth random multiplicative field (mean ~1): tissue inhomogeneity of
        correlation length ``scale`` (fraction of depth)."""
        h, w = self.echo.shape
        cell = max(2.0, scale * self.unit)
        coarse = self.rng.standard_normal((int(h / cell) + 2, int(w / cell) + 2)).astype(np.float32)
        field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        return np.exp(strength * field).astype(np.float32)

    def region(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of the polygon ``points``."""
        mask = np.zeros(self.echo.shape, np.uint8)
        cv2.fillPoly(mask, _fixed(points), 1, lineType=cv2.LINE_8, shift=_SHIFT)
        return mask.astype(bool)

    def paint(self, where: np.ndarray, echo: float | None = None, attenuation: float | None = None,
              label: int | None = None, texture: np.ndarray | None = None) -> np.ndarray:
        """Give the polygon (``N x 2`` points) or boolean mask ``where`` new tissue properties
        and, if ``label`` is given, that class index. Returns the boolean mask painted."""
        mask = where if where.dtype == bool and where.shape == self.echo.shape else self.region(where)
        if echo is not None:
            self.echo[mask] = echo * (texture[mask] if texture is not None else 1.0)
        if attenuation is not None:
            self.attenuation[mask] = attenuation
        if label is not None:
            self.label[mask] = label
        return mask

    def line(self, points: np.ndarray, strength: float, thickness: float, closed: bool = False,
             attenuation: float | None = None) -> None:
        """A specular reflector along a polyline (a bright line); with ``attenuation`` it
        also casts an acoustic shadow (bone, calcification, gas)."""
        pts = _fixed(points)
        th = max(1, int(round(thickness)))
        cv2.polylines(self.specular, pts, closed, float(strength), th, cv2.LINE_AA, _SHIFT)
        if attenuation is not None:
            cv2.polylines(self.attenuation, pts, closed, float(attenuation), th, cv2.LINE_8, _SHIFT)

    def stroke(self, points: np.ndarray, thickness: float, closed: bool = False, **properties) -> np.ndarray:
        """Paint a thick polyline (a vessel, a halo, a stripe) like :meth:`paint` paints an area."""
        mask = np.zeros(self.echo.shape, np.uint8)
        cv2.polylines(mask, _fixed(points), closed, 1, max(1, int(round(thickness))), cv2.LINE_8, _SHIFT)
        return self.paint(mask.astype(bool), **properties)

    def arc(self, r: float, t0: float, t1: float, n: int = 48) -> np.ndarray:
        """Points along a line of constant depth ``r`` (an arc for convex probes)."""
        t = np.linspace(t0, t1, n)
        return np.stack(self.probe.to_xy(np.full(n, r), t), axis=1)

    def ray(self, t: float, r0: float, r1: float, n: int = 24) -> np.ndarray:
        """Points along one scan line at lateral position ``t`` from depth ``r0`` to ``r1``."""
        r = np.linspace(r0, r1, n)
        return np.stack(self.probe.to_xy(r, np.full(n, t)), axis=1)

    def band(self, r0: float, r1: float, t0: float = -0.05, t1: float = 1.05,
             wobble: float = 0.0) -> np.ndarray:
        """Polygon between depths ``r0`` and ``r1`` (a layer parallel to the skin), whose
        edges undulate by up to ``wobble`` (fraction of depth)."""
        n = 40
        t = np.linspace(t0, t1, n)
        phase = self.rng.uniform(0, 2 * np.pi, 2)
        top = r0 + wobble * np.sin(3 * t + phase[0])
        bottom = r1 + wobble * np.sin(2.5 * t + phase[1])
        upper = np.stack(self.probe.to_xy(top, t), axis=1)
        lower = np.stack(self.probe.to_xy(bottom, t[::-1]), axis=1)
        return np.concatenate([upper, lower])
