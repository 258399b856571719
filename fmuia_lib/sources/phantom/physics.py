"""B-mode image formation for the phantom: probe geometry, speckle, attenuation, log compression.

A real scanner fires many narrow beams (scan lines) into tissue. Each beam returns echoes
from tiny scatterers; because the pulse has a finite length and the beam a finite width, the
echoes of neighbouring scatterers interfere and form *speckle*, the grainy texture of every
ultrasound image. We simulate exactly that chain, but on a coarse grid so that an image
takes milliseconds:

1. **Beam grid.** The image is sampled in beam coordinates: depth along a scan line
   (``r``, 0 at the probe face, 1 at the deepest sample) and lateral position across the
   scan lines (``t``, 0 = first line, 1 = last). A *convex* probe fans its lines out from a
   virtual apex (a sector); a *linear* probe fires parallel lines (a rectangle).
2. **Scatterers.** Each beam sample gets a random complex scatterer amplitude whose power is
   the local *echogenicity* (fluid ~0, soft tissue 1, fat/fibrous tissue more).
3. **Point-spread function.** Blurring the complex scatterers with a Gaussian that is short
   along the beam (axial resolution) and wider across it (lateral resolution) gives complex
   echoes; their magnitude (envelope detection) is Rayleigh-distributed speckle.
4. **Specular reflectors.** Large smooth interfaces (bone, vessel walls, capsules) reflect
   coherently: they are added as bright lines, not as speckle.
5. **Attenuation.** Each beam loses energy with depth; strongly attenuating structures
   (bone, calcification, gas) leave a dark *acoustic shadow* behind them, and weakly
   attenuating fluid leaves a bright *posterior enhancement*. We integrate an attenuation
   map along every beam. Time-gain compensation (TGC) then boosts the deep samples again,
   tuned for average tissue, so the deviations remain visible.
6. **Log compression.** Echo amplitudes span ~60 dB; the display maps a dynamic range of
   decibels to grey levels 0..255.
7. **Scan conversion.** Every image pixel looks up its beam coordinates; pixels outside the
   field of view stay black.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

#: Beam samples per image pixel. Below 1 the speckle is simulated on a coarser grid than
#: the image, which is what makes generation fast; scan conversion interpolates.
GRID_SCALE = 0.5
#: Attenuation of average soft tissue, in nepers of amplitude over the full depth.
TISSUE_ATTENUATION = 1.4


@dataclass(frozen=True)
class Probe:
    """Field-of-view geometry of one image.

    ``kind`` is ``"convex"`` (sector fanning out from a virtual apex at ``(cx, cy)``, radii
    ``r0`` at the probe face and ``r1`` at the deepest point, half opening angle
    ``half_angle`` in radians) or ``"linear"`` (parallel beams between columns ``x0`` and
    ``x1``, rows ``y0`` to ``y1``).
    """

    kind: str
    width: int
    height: int
    cx: float = 0.0
    cy: float = 0.0
    r0: float = 0.0
    r1: float = 0.0
    half_angle: float = 0.0
    x0: float = 0.0
    x1: float = 0.0
    y0: float = 0.0
    y1: float = 0.0

    @property
    def depth_px(self) -> float:
        """Length of a scan line in pixels (the image's natural length unit)."""
        return self.r1 - self.r0 if self.kind == "convex" else self.y1 - self.y0

    def to_xy(self, r: np.ndarray | float, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Beam coordinates (depth ``r``, lateral ``t``, both in [0, 1]) to pixel ``(x, y)``."""
        r, t = np.asarray(r, dtype=np.float64), np.asarray(t, dtype=np.float64)
        if self.kind == "convex":
            radius = self.r0 + r * (self.r1 - self.r0)
            theta = (t - 0.5) * 2.0 * self.half_angle
            return self.cx + radius * np.sin(theta), self.cy + radius * np.cos(theta)
        return self.x0 + t * (self.x1 - self.x0), self.y0 + r * (self.y1 - self.y0)

    def to_rt(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel ``(x, y)`` to beam coordinates ``(r, t)``; values outside [0, 1] are outside the view."""
        if self.kind == "convex":
            dx, dy = x - self.cx, y - self.cy
            r = (np.hypot(dx, dy) - self.r0) / (self.r1 - self.r0)
            t = np.arctan2(dx, dy) / (2.0 * self.half_angle) + 0.5
            return r, t
        return (y - self.y0) / (self.y1 - self.y0), (x - self.x0) / (self.x1 - self.x0)

    @cached_property
    def pixel_beam_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Beam coordinates ``(r, t)`` of every pixel centre (``H x W`` float32 each)."""
        yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32) + np.float32(0.5)
        r, t = self.to_rt(xx, yy)
        return r.astype(np.float32), t.astype(np.float32)

    def field_of_view(self) -> np.ndarray:
        """Boolean ``H x W`` mask of the pixels that the beams cover (read-only: computed once
        per probe, as rendering asks for it twice per image)."""
        return self._field_of_view

    @cached_property
    def _field_of_view(self) -> np.ndarray:
        r, t = self.pixel_beam_coords
        inside = (r >= 0) & (r <= 1) & (t >= 0) & (t <= 1)
        inside.flags.writeable = False
        return inside


def make_probe(kind: str, width: int, height: int, rng: np.random.Generator) -> Probe:
    """A probe of ``kind`` whose field of view fills a ``width x height`` image, with random
    opening angle, footprint and margins (as different scanners and presets would give)."""
    if kind == "convex":
        face_y = rng.uniform(2.0, 0.04 * height)  # top of the sector (probe face centre)
        r0 = rng.uniform(0.18, 0.35) * height  # radius of the probe face
        cy = face_y - r0
        r1 = height - 1.0 - cy
        max_half = np.arcsin(min(0.999, (width / 2.0 - 2.0) / r1))
        half_angle = min(np.deg2rad(rng.uniform(30.0, 40.0)), max_half)
        return Probe("convex", width, height, cx=width / 2.0, cy=cy, r0=r0, r1=r1,
                     half_angle=float(half_angle))
    if kind == "linear":
        margin = rng.uniform(0.0, 0.08) * width
        return Probe("linear", width, height, x0=margin, x1=width - margin,
                     y0=rng.uniform(1.0, 0.03 * height), y1=float(height))
    raise ValueError(f"unknown probe kind {kind!r}; expected 'convex' or 'linear'")


def _beam_grid(probe: Probe) -> tuple[int, int]:
    """Number of depth samples and scan lines for ``probe``."""
    n_r = max(32, int(round(GRID_SCALE * probe.depth_px)))
    if probe.kind == "convex":
        lateral_px = 2.0 * probe.half_angle * (probe.r0 + probe.r1) / 2.0
    else:
        lateral_px = probe.x1 - probe.x0
    return n_r, max(32, int(round(GRID_SCALE * lateral_px)))


def simulate_bmode(echo: np.ndarray, attenuation: np.ndarray, specular: np.ndarray,
                   probe: Probe, rng: np.random.Generator) -> np.ndarray:
    """Form a B-mode image (``H x W`` uint8) from tissue property maps in pixel space.

    ``echo``: scatterer power (1 = average soft tissue, ~0 = fluid);
    ``attenuation``: nepers of amplitude per full depth (``TISSUE_ATTENUATION`` = tissue);
    ``specular``: amplitude of coherent reflectors (bright lines), 0 elsewhere.
    """
    n_r, n_t = _beam_grid(probe)
    r = (np.arange(n_r, dtype=np.float64) + 0.5) / n_r
    t = (np.arange(n_t, dtype=np.float64) + 0.5) / n_t
    bx, by = np.broadcast_arrays(*probe.to_xy(r[:, None], t[None, :]))
    maps = cv2.merge([echo.astype(np.float32), attenuation.astype(np.float32),
                      specular.astype(np.float32)])
    beam = cv2.remap(maps, bx.astype(np.float32), by.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    b_echo, b_att, b_spec = cv2.split(beam)

    # Scatterers -> PSF -> envelope. The complex noise is normalised to unit power after
    # blurring so that echo = 1 means "average tissue" whatever the PSF size.
    sigma_axial = rng.uniform(0.6, 0.9)
    sigma_lateral = rng.uniform(1.4, 2.2)
    noise = rng.standard_normal((n_r, n_t, 2)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    speckle = np.sqrt((blurred ** 2).sum(axis=2) / (2.0 * float(blurred.var()) + 1e-12))
    spec = cv2.GaussianBlur(b_spec, (0, 0), sigmaX=sigma_lateral * 0.7, sigmaY=sigma_axial)
    amplitude = np.sqrt(np.maximum(b_echo, 0.0)) * speckle + spec * (0.6 + 0.4 * speckle)

    # Attenuation integrated along each beam (axis 0 is depth), then TGC for average tissue.
    path = np.cumsum(b_att, axis=0) / n_r
    tgc = TISSUE_ATTENUATION * rng.uniform(0.8, 1.0)
    amplitude *= np.exp(-path + tgc * r[:, None]).astype(np.float32)
    amplitude += 0.02 * speckle[::-1, ::-1]  # electronic noise floor (independent grain)
    # the mild smoothing of a scanner's speckle-reduction filter (fills the darkest pits)
    amplitude = cv2.GaussianBlur(amplitude, (0, 0), sigmaX=0.6, sigmaY=0.5)

    # Log compression to the display range.
    dynamic_range = rng.uniform(45.0, 55.0)
    top_db = rng.uniform(30.0, 36.0)
    db = 20.0 * np.log10(amplitude + 1e-4)
    grey = np.clip((db - (top_db - dynamic_range)) * (255.0 / dynamic_range), 0.0, 255.0)

    # Scan conversion: every pixel looks up its beam sample; outside the view is black.
    pr, pt = probe.pixel_beam_coords
    image = cv2.remap(grey.astype(np.float32), pt * n_t - 0.5, pr * n_r - 0.5, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    inside = probe.field_of_view()
    image[~inside] = 0.0
    return np.rint(image).astype(np.uint8)
