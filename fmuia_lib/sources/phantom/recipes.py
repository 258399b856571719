"""Anatomy recipes: one function per ``phantom_recipe`` name of the manifest.

A recipe paints one scene (see :class:`shapes.Scene`) and returns what the label needs
beyond the label map: a classification recipe receives the class index it must depict;
a Regression recipe returns its landmarks (``K x 2`` pixels, in class-name order); the
others return ``None`` (segmentation and detection read ``scene.label``).

Recipes paint the background and unlabelled *distractors* first and the labelled
structures last, so a label is never covered by something drawn after it. Every size,
position, angle and echo level is drawn at random within anatomical ranges, and
different classes overlap in their ranges: the label follows from the image, but a model
has to look at shape, margin, texture and artefacts, not at one grey level.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .shapes import (ANECHOIC, BONE_ATTENUATION, FLUID_ATTENUATION, Scene, blob_points, direction,
                     ellipse_points, transform)

Recipe = Callable[[Scene, np.random.Generator, "int | None"], "np.ndarray | None"]
RECIPES: dict[str, Recipe] = {}


def recipe(name: str) -> Callable[[Recipe], Recipe]:
    """Register a recipe under its manifest name."""
    def register(func: Recipe) -> Recipe:
        RECIPES[name] = func
        return func
    return register


# --------------------------------------------------------------------------- backgrounds
def soft_tissue(s: Scene, echo: float = 1.0, strength: float = 0.3) -> None:
    """Inhomogeneous soft tissue everywhere."""
    s.echo[:] = echo * s.texture(0.12, strength)


def skin_layers(s: Scene, rng: np.random.Generator, fat_depth: float = 0.12) -> float:
    """Skin (bright line), subcutaneous fat with lobules, fascia; returns the fascia depth."""
    fascia = fat_depth * rng.uniform(0.7, 1.3)
    s.paint(s.band(-0.1, fascia, wobble=0.01), echo=0.45, texture=s.texture(0.04, 0.5))
    s.line(s.arc(0.012, -0.05, 1.05), strength=rng.uniform(2.5, 4.0), thickness=2)
    s.line(s.arc(fascia, -0.05, 1.05), strength=rng.uniform(1.0, 2.0), thickness=1.5)
    return fascia


def amniotic_background(s: Scene, rng: np.random.Generator) -> None:
    """Maternal abdominal wall and uterine wall on top, amniotic fluid below; sometimes a placenta."""
    wall = rng.uniform(0.08, 0.18)
    s.paint(s.band(-0.1, 1.2), echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
    s.paint(s.band(-0.1, wall, wobble=0.015), echo=1.0, attenuation=1.4, texture=s.texture(0.06, 0.4))
    s.line(s.arc(0.01, -0.05, 1.05), strength=3.0, thickness=2)
    if rng.random() < 0.5:  # placenta: thick, finely granular band under the uterine wall
        t0 = rng.uniform(-0.2, 0.5)
        s.paint(s.band(wall, wall + rng.uniform(0.06, 0.14), t0, t0 + rng.uniform(0.4, 0.8), wobble=0.01),
                echo=1.6, attenuation=1.4, texture=s.texture(0.03, 0.3))
    for _ in range(rng.integers(0, 3)):  # free-floating umbilical cord loops
        c = s.random_point((0.3, 0.95), (0.05, 0.95))
        for k in (-1, 1):
            s.paint(ellipse_points(c + k * 0.02 * s.unit, (0.018 * s.unit,) * 2), echo=0.03)
        s.line(ellipse_points(c, (0.05 * s.unit, 0.035 * s.unit), rng.uniform(0, 180)), 0.8, 1.5, closed=True)


def distractors(s: Scene, rng: np.random.Generator, n: int, r: tuple[float, float] = (0.15, 0.95)) -> None:
    """Unlabelled small cysts, vessels and bright foci that a model must learn to ignore."""
    for _ in range(n):
        c = s.random_point(r, (0.05, 0.95))
        size = rng.uniform(0.015, 0.05) * s.unit
        if rng.random() < 0.5:
            s.paint(ellipse_points(c, (size, size * rng.uniform(0.5, 1.0)), rng.uniform(0, 180)),
                    echo=rng.uniform(0.004, 0.2), attenuation=0.5)
        else:
            s.paint(ellipse_points(c, (size * 0.6, size * 0.4), rng.uniform(0, 180)),
                    echo=rng.uniform(2.0, 4.0))


# --------------------------------------------------------------------------- lesions
def breast_background(s: Scene, rng: np.random.Generator) -> None:
    """Skin, fat lobules, fibroglandular tissue, pectoral muscle."""
    soft_tissue(s, 1.6, 0.45)
    fascia = skin_layers(s, rng, 0.15)
    for _ in range(rng.integers(3, 7)):  # fat lobules: hypoechoic ovals between the ligaments
        c = s.random_point((0.03, fascia + 0.15), (0.0, 1.0))
        s.paint(ellipse_points(c, (rng.uniform(0.04, 0.1) * s.unit, rng.uniform(0.02, 0.04) * s.unit),
                               rng.uniform(-15, 15)), echo=rng.uniform(0.3, 0.6))
    muscle = rng.uniform(0.72, 0.85)
    s.paint(s.band(muscle, 1.2, wobble=0.02), echo=0.5, texture=s.texture(0.05, 0.3))
    for k in range(4):
        s.line(s.arc(muscle + 0.03 + 0.05 * k, -0.05, 1.05), strength=0.6, thickness=1)
    s.line(s.arc(muscle, -0.05, 1.05), strength=2.0, thickness=2)


def breast_lesion(s: Scene, rng: np.random.Generator, kind: str, label: int | None) -> np.ndarray:
    """A ``benign`` (oval, circumscribed, wider than tall, often posterior enhancement) or
    ``malignant`` (irregular or spiculated, taller, often posterior shadowing) breast mass."""
    c = s.random_point((0.3, 0.6), (0.2, 0.8))
    size = rng.uniform(0.08, 0.2) * s.unit
    if kind == "benign":
        axes = (size, size * rng.uniform(0.45, 0.85))
        pts = blob_points(c, axes, rng.uniform(-20, 20), rng, lobulation=rng.uniform(0.02, 0.2))
        cyst = rng.random() < 0.35
        mask = s.paint(pts, echo=ANECHOIC if cyst else rng.uniform(0.08, 0.4),
                       attenuation=rng.uniform(0.1, 0.6) if rng.random() < 0.7 else 1.4, label=label)
        s.line(pts, strength=rng.uniform(0.3, 1.2), thickness=1.5, closed=True)
    else:
        axes = (size, size * rng.uniform(0.75, 1.25))
        pts = blob_points(c, axes, rng.uniform(0, 180), rng, lobulation=rng.uniform(0.1, 0.3),
                          spicules=rng.uniform(0.0, 0.5))
        mask = s.paint(pts, echo=rng.uniform(0.05, 0.3), attenuation=rng.uniform(5.0, 14.0)
                       if rng.random() < 0.75 else 1.4, label=label, texture=s.texture(0.02, 0.5))
        for _ in range(rng.integers(0, 6)):  # microcalcifications
            p = pts.mean(0) + rng.normal(0, 0.35, 2) * size
            s.line(np.array([p, p + 1.0]), strength=rng.uniform(3, 6), thickness=2)
    return mask


@recipe("breast_lesion")
def _breast_lesion_seg(s, rng, cls):
    breast_background(s, rng)
    breast_lesion(s, rng, "benign" if rng.random() < 0.5 else "malignant", label=1)


@recipe("breast_benign_malignant")
def _breast_2cls(s, rng, cls):
    breast_background(s, rng)
    breast_lesion(s, rng, ("benign", "malignant")[cls], label=None)


@recipe("breast_normal_benign_malignant")
def _breast_3cls(s, rng, cls):
    breast_background(s, rng)
    if cls > 0:
        breast_lesion(s, rng, ("benign", "malignant")[cls - 1], label=None)


def thyroid_scene(s: Scene, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Transverse neck: strap muscles, thyroid lobe, trachea (bright arc, reverberation
    shadow) on one side, carotid artery on the other. Returns the lobe centre and radius."""
    soft_tissue(s, 0.7, 0.3)
    fascia = skin_layers(s, rng, 0.08)
    s.paint(s.band(fascia, fascia + rng.uniform(0.06, 0.1), wobble=0.01), echo=0.35,
            texture=s.texture(0.04, 0.3))
    side = rng.choice([-1.0, 1.0])
    centre = s.at(rng.uniform(0.38, 0.5), 0.5 + side * rng.uniform(-0.02, 0.08))
    radius = rng.uniform(0.28, 0.36) * s.unit
    lobe = blob_points(centre, (radius * 1.25, radius * 0.75), rng.uniform(-10, 10), rng, 0.08)
    s.paint(lobe, echo=rng.uniform(1.8, 2.6), texture=s.texture(0.03, 0.25))
    s.line(lobe, 0.8, 1.5, closed=True)
    trachea = s.at(0.25, 0.5 - side * 0.55)
    arc = ellipse_points(trachea, (0.2 * s.unit, 0.15 * s.unit))[36:72]
    s.line(arc, strength=4.0, thickness=3, attenuation=60.0)
    carotid = s.at(rng.uniform(0.55, 0.7), 0.5 + side * rng.uniform(0.35, 0.42))
    s.paint(ellipse_points(carotid, (0.1 * s.unit,) * 2), echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
    s.line(ellipse_points(carotid, (0.1 * s.unit,) * 2), 1.5, 2, closed=True)
    return centre, radius


def thyroid_nodule(s: Scene, rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """A nodule inside the lobe: hypo-, iso- or hyperechoic, with or without a halo,
    cystic parts or microcalcifications; labelled 1."""
    c = centre + rng.uniform(-0.45, 0.45, 2) * radius * np.array([1.0, 0.5])
    size = rng.uniform(0.1, 0.3) * radius * 2
    pts = blob_points(c, (size, size * rng.uniform(0.6, 1.1)), rng.uniform(0, 180), rng,
                      lobulation=rng.uniform(0.03, 0.3), spicules=rng.uniform(0, 0.2) * (rng.random() < 0.3))
    echo = rng.choice([0.25, 0.6, 4.5], p=[0.55, 0.15, 0.3]) * rng.uniform(0.7, 1.3)
    mask = s.paint(pts, echo=echo, attenuation=rng.uniform(0.8, 3.0), label=1,
                   texture=s.texture(0.03, 0.6))
    if rng.random() < 0.5:
        s.stroke(pts, 3, closed=True, echo=0.05)  # hypoechoic halo
    if rng.random() < 0.3:
        s.paint(ellipse_points(c, (size * 0.4, size * 0.3), rng.uniform(0, 180)), echo=ANECHOIC)
    return mask


@recipe("thyroid_nodule")
@recipe("thyroid_nodule_box")
def _thyroid(s, rng, cls):
    centre, radius = thyroid_scene(s, rng)
    distractors(s, rng, int(rng.integers(0, 3)), (0.5, 0.95))
    thyroid_nodule(s, rng, centre, radius)


@recipe("ovary_tumor")
def _ovary(s, rng, cls):
    soft_tissue(s, 0.9, 0.35)
    if rng.random() < 0.6:  # bladder: a large fluid collection that is not the tumour
        s.paint(blob_points(s.at(0.12, rng.uniform(0.2, 0.8)), (0.3 * s.unit, 0.14 * s.unit), 0, rng, 0.05),
                echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
    ovary_c = s.random_point((0.35, 0.6), (0.25, 0.75))
    ovary = blob_points(ovary_c, (0.18 * s.unit, 0.12 * s.unit), rng.uniform(0, 180), rng, 0.1)
    s.paint(ovary, echo=0.8, texture=s.texture(0.03, 0.3))
    for _ in range(rng.integers(2, 7)):  # follicles
        f = ovary_c + rng.uniform(-0.1, 0.1, 2) * s.unit
        s.paint(ellipse_points(f, (rng.uniform(0.01, 0.03) * s.unit,) * 2), echo=ANECHOIC,
                attenuation=FLUID_ATTENUATION)
    c = ovary_c + direction(rng.uniform(0, 360)) * rng.uniform(0.05, 0.2) * s.unit
    size = rng.uniform(0.1, 0.22) * s.unit
    pts = blob_points(c, (size, size * rng.uniform(0.7, 1.0)), rng.uniform(0, 180), rng, rng.uniform(0.05, 0.25))
    if rng.random() < 0.55:  # cystic tumour with septa and papillary projections
        s.paint(pts, echo=rng.uniform(0.004, 0.08), attenuation=FLUID_ATTENUATION, label=1)
        for _ in range(rng.integers(0, 4)):
            s.line(np.array([c + rng.uniform(-1, 1, 2) * size * 0.8, c + rng.uniform(-1, 1, 2) * size * 0.8]),
                   strength=1.2, thickness=1.5)
        if rng.random() < 0.5:
            s.paint(ellipse_points(c + size * 0.5 * direction(rng.uniform(0, 360)), (size * 0.25,) * 2),
                    echo=1.5)
    else:  # solid tumour, heterogeneous
        s.paint(pts, echo=rng.uniform(0.3, 1.4), attenuation=rng.uniform(1.4, 4.0), label=1,
                texture=s.texture(0.03, 0.8))
    s.line(pts, strength=rng.uniform(0.5, 1.5), thickness=1.5, closed=True)


@recipe("liver_lesion")
def _liver_lesion(s, rng, cls):
    liver_background(s, rng)
    c = s.random_point((0.3, 0.7), (0.2, 0.8))
    size = rng.uniform(0.08, 0.15) * s.unit  # large enough to tell from the vessels at 64 px
    if cls == 0:  # benign: cyst (anechoic, enhancement) or haemangioma (bright, well defined)
        pts = blob_points(c, (size, size * rng.uniform(0.75, 1.0)), rng.uniform(0, 180), rng, 0.05)
        if rng.random() < 0.45:
            s.paint(pts, echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
            s.line(pts, 1.0, 1.5, closed=True)
        else:
            s.paint(pts, echo=rng.uniform(2.5, 6.0), texture=s.texture(0.02, 0.2))
    else:  # malignant: hypoechoic halo (target sign), irregular, sometimes several
        for k in range(1 if rng.random() < 0.6 else int(rng.integers(2, 4))):
            ck = c if k == 0 else s.random_point((0.25, 0.8), (0.15, 0.85))
            sk = size if k == 0 else size * rng.uniform(0.4, 0.8)
            pts = blob_points(ck, (sk, sk * rng.uniform(0.7, 1.0)), rng.uniform(0, 180), rng,
                              rng.uniform(0.1, 0.3))
            s.paint(pts, echo=rng.uniform(0.15, 0.5), attenuation=2.0)
            core = blob_points(ck, (sk * 0.6, sk * 0.55), 0, rng, 0.2)
            s.paint(core, echo=rng.uniform(0.8, 3.0), texture=s.texture(0.02, 0.6))


def liver_background(s: Scene, rng: np.random.Generator) -> None:
    """Abdominal wall over liver parenchyma with portal veins (bright walls), hepatic veins
    and a curved diaphragm in the depth."""
    soft_tissue(s, 1.2, 0.2)
    wall = rng.uniform(0.06, 0.12)
    s.paint(s.band(-0.1, wall, wobble=0.01), echo=0.5, texture=s.texture(0.03, 0.5))
    s.line(s.arc(wall, -0.05, 1.05), 1.5, 1.5)
    for _ in range(rng.integers(3, 7)):
        a = s.random_point((0.2, 0.9), (0.0, 1.0))
        b = a + direction(rng.uniform(0, 360)) * rng.uniform(0.1, 0.3) * s.unit
        width = rng.uniform(0.01, 0.03) * s.unit
        pts = np.array([a, b])
        s.stroke(pts, width * 2, echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
        if rng.random() < 0.5:
            s.line(pts + [0, width], 1.2, 1.5)
            s.line(pts - [0, width], 1.2, 1.5)
    diaphragm = rng.uniform(0.8, 0.95)
    s.line(s.band(diaphragm, diaphragm + 0.02, wobble=0.03)[:40], strength=4.0, thickness=3)


# --------------------------------------------------------------------------- fetal
def fetal_head(s: Scene, rng: np.random.Generator, centre: np.ndarray, axes: tuple[float, float],
               angle: float, label: int | None, face: bool = False) -> np.ndarray:
    """Axial fetal head: hypoechoic brain, bright skull (shadowing), midline echo (falx)
    and cavum septi pellucidi; with ``face`` the orbits mark the front (+major axis)."""
    outline = ellipse_points(centre, axes, angle)
    s.paint(outline, echo=rng.uniform(0.15, 0.4), attenuation=1.0, label=label,
            texture=s.texture(0.04, 0.5))
    s.line(outline, strength=rng.uniform(3.0, 6.0), thickness=max(2.0, 0.025 * s.unit), closed=True,
           attenuation=8.0)
    falx = transform(np.array([[-axes[0] * 0.9, 0], [axes[0] * 0.9, 0]]), centre, angle)
    s.line(falx, strength=rng.uniform(0.8, 2.0), thickness=1.5)
    csp = transform(np.array([[axes[0] * 0.25, -axes[1] * 0.08], [axes[0] * 0.45, -axes[1] * 0.08],
                              [axes[0] * 0.45, axes[1] * 0.08], [axes[0] * 0.25, axes[1] * 0.08]]),
                    centre, angle)
    s.paint(csp, echo=0.02)
    if face:
        for k in (-1, 1):
            orbit = transform(np.array([[axes[0] * 0.72, k * axes[1] * 0.4]]), centre, angle)[0]
            s.line(ellipse_points(orbit, (axes[1] * 0.15,) * 2), 3.0, 2, closed=True)
        nose = transform(np.array([[axes[0] * 1.0, -axes[1] * 0.1], [axes[0] * 1.25, 0.0],
                                   [axes[0] * 1.0, axes[1] * 0.1]]), centre, angle)
        s.paint(nose, echo=1.5)
        s.line(nose, 3.0, 2)
    return outline


@recipe("fetal_head")
def _fetal_head_seg(s, rng, cls):
    amniotic_background(s, rng)
    if rng.random() < 0.5:  # part of the fetal body beside the head
        s.paint(ellipse_points(s.at(rng.uniform(0.6, 0.9), rng.choice([0.0, 1.0])), (0.3 * s.unit,) * 2),
                echo=0.9, texture=s.texture(0.04, 0.4))
    a = rng.uniform(0.22, 0.34) * s.unit
    fetal_head(s, rng, s.random_point((0.45, 0.58), (0.35, 0.65)), (a, a * rng.uniform(0.7, 0.85)),
               rng.uniform(-60, 60), label=1)


@recipe("orientation_head")
def _orientation_head(s, rng, cls):
    amniotic_background(s, rng)
    a = rng.uniform(0.2, 0.28) * s.unit
    fetal_head(s, rng, s.random_point((0.5, 0.58), (0.42, 0.58)), (a, a * rng.uniform(0.72, 0.85)),
               45.0 * cls + rng.uniform(-12, 12), label=None, face=True)


def fetal_abdomen(s: Scene, rng: np.random.Generator, labelled: bool) -> None:
    """Fetal abdominal circumference plane: abdomen (1), stomach bubble (2), umbilical
    vein (3), spine (4) with acoustic shadow, ribs."""
    r = rng.uniform(0.22, 0.3) * s.unit
    c = s.random_point((0.5, 0.58), (0.4, 0.6))
    spin = rng.uniform(0, 360)
    lab = (lambda k: k) if labelled else (lambda k: None)
    outline = ellipse_points(c, (r, r * rng.uniform(0.85, 1.0)), spin)
    s.paint(outline, echo=rng.uniform(0.6, 1.0), attenuation=1.2, label=lab(1), texture=s.texture(0.04, 0.4))
    s.line(outline, strength=1.5, thickness=2, closed=True)
    for k in (-1, 1):  # ribs: short bright arcs on both sides
        s.line(ellipse_points(c, (r * 0.93,) * 2, spin + k * 90)[:8], 2.5, 2, attenuation=30.0)
    stomach = transform(np.array([[0.0, r * rng.uniform(0.25, 0.45)]]), c, spin + rng.uniform(-25, 25))[0]
    s.paint(blob_points(stomach, (r * rng.uniform(0.2, 0.3), r * rng.uniform(0.12, 0.2)), spin, rng, 0.1),
            echo=ANECHOIC, attenuation=FLUID_ATTENUATION, label=lab(2))
    vein = transform(np.stack([np.linspace(r * 0.6, r * 0.1, 8), r * 0.15 * np.sin(np.linspace(0, 2, 8))], 1),
                     c, spin)
    s.stroke(vein, max(2.0, r * 0.1), echo=0.02, attenuation=FLUID_ATTENUATION, label=lab(3))
    spine = transform(np.array([[-r * 0.78, 0.0]]), c, spin)[0]
    spine_region = ellipse_points(spine, (r * 0.16, r * 0.2), spin)
    s.paint(spine_region, echo=1.6, label=lab(4))
    for p in transform(np.array([[-r * 0.85, 0.0], [-r * 0.7, -r * 0.1], [-r * 0.7, r * 0.1]]), c, spin):
        s.line(ellipse_points(p, (r * 0.035,) * 2), 4.0, 2, closed=True, attenuation=40.0)


@recipe("fetal_abdomen")
def _fetal_abdomen_seg(s, rng, cls):
    amniotic_background(s, rng)
    fetal_abdomen(s, rng, labelled=True)


def fetal_thorax(s: Scene, rng: np.random.Generator, label: int | None) -> None:
    """Four-chamber view: thorax with ribs and spine; heart (labelled) with four chambers."""
    r = rng.uniform(0.22, 0.3) * s.unit
    c = s.random_point((0.5, 0.58), (0.4, 0.6))
    spin = rng.uniform(0, 360)
    thorax = ellipse_points(c, (r, r * rng.uniform(0.88, 1.0)), spin)
    s.paint(thorax, echo=rng.uniform(1.3, 1.9), attenuation=1.2, texture=s.texture(0.04, 0.3))
    s.line(thorax, strength=1.5, thickness=2, closed=True)
    for p in transform(np.array([[-r * 0.85, 0.0], [-r * 0.7, -r * 0.1], [-r * 0.7, r * 0.1]]), c, spin):
        s.line(ellipse_points(p, (r * 0.035,) * 2), 4.0, 2, closed=True, attenuation=40.0)
    for k in (-1, 1):
        s.line(ellipse_points(c, (r * 0.95,) * 2, spin + k * 60)[:10], 2.5, 2, attenuation=20.0)
    hr = r * rng.uniform(0.38, 0.5)
    hc = transform(np.array([[r * 0.25, r * 0.15]]), c, spin)[0]
    heart = blob_points(hc, (hr, hr * 0.85), spin + 45, rng, 0.05)
    s.paint(heart, echo=0.8, label=label)
    for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):  # chambers, separated by the septal cross
        ch = transform(np.array([[dx * hr * 0.42, dy * hr * 0.38]]), hc, spin + 45)[0]
        s.paint(ellipse_points(ch, (hr * 0.33, hr * 0.28), spin + 45), echo=0.03)


@recipe("fetal_heart")
def _fetal_heart_seg(s, rng, cls):
    amniotic_background(s, rng)
    fetal_thorax(s, rng, label=1)


def femur(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """A femur diaphysis (bright, shadowing) in its thigh, which is broader towards the hip;
    the proximal end carries the hypoechoic cartilaginous head. Returns [proximal, distal]
    end points."""
    length = rng.uniform(0.3, 0.5) * s.unit
    c = s.random_point((0.45, 0.6), (0.42, 0.58))
    angle = rng.uniform(-35, 35) + (180.0 if rng.random() < 0.5 else 0.0)
    # the thigh tapers from hip to knee: its broad end is a cue to the femur's orientation that
    # survives 64 px, where the cartilaginous head is a few pixels
    phi = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    x = length * 0.7 * np.cos(phi)
    thigh = transform(np.stack([x, length * 0.22 * (1 - 0.45 * x / (length * 0.7)) * np.sin(phi)], 1), c, angle)
    s.paint(thigh, echo=0.7, attenuation=1.2, texture=s.texture(0.04, 0.4))
    ends = transform(np.array([[-length / 2, 0.0], [length / 2, 0.0]]), c, angle)
    head = ellipse_points(ends[0], (length * 0.15, length * 0.13), angle)  # wide enough to see at 64 px
    s.paint(head, echo=0.15)
    s.line(head[10:62], 1.0, 1.5)
    s.line(ends, strength=rng.uniform(4.0, 7.0), thickness=max(3.0, length * 0.05), attenuation=BONE_ATTENUATION)
    return ends


@recipe("femur_endpoints")
def _femur(s, rng, cls):
    amniotic_background(s, rng)
    return femur(s, rng)


def cervix(s: Scene, rng: np.random.Generator, labels: tuple[int | None, int | None]) -> np.ndarray:
    """Transvaginal cervix: a curved, moderately echoic body split by the bright canal into
    anterior (upper) and posterior lips; the uterine body joins at the internal os.
    ``labels`` = (anterior, posterior). Returns [internal_os, external_os]."""
    soft_tissue(s, 0.45, 0.35)
    length = rng.uniform(0.45, 0.6) * s.unit
    half_w = length * rng.uniform(0.2, 0.28)
    c = s.random_point((0.42, 0.52), (0.45, 0.55))
    angle = rng.uniform(-20, 20)
    flip = 1.0 if rng.random() < 0.5 else -1.0  # internal os to the right (+1) or left (-1)
    bend = rng.uniform(-0.08, 0.08) * length
    u = np.linspace(-0.5, 0.5, 31) * length
    axis = np.stack([u, bend * (1 - (2 * u / length) ** 2)], 1)
    rounded = (1 - (2 * u / length) ** 4) ** 0.25  # blunt, rounded ends
    width = half_w * rounded * (0.8 + 0.4 * (0.5 + flip * u / length))  # wider towards the uterus
    upper = axis - np.stack([np.zeros_like(u), width], 1)
    lower = axis + np.stack([np.zeros_like(u), width], 1)
    uterus = transform(np.array([[flip * length * 0.75, 0.0]]), c, angle)[0]
    s.paint(ellipse_points(uterus, (length * 0.4, half_w * 2.0), angle), echo=0.9, texture=s.texture(0.04, 0.4))
    anterior = transform(np.concatenate([upper, axis[::-1]]), c, angle)
    posterior = transform(np.concatenate([axis, lower[::-1]]), c, angle)
    tex = s.texture(0.03, 0.35)
    s.paint(anterior, echo=rng.uniform(1.3, 2.0), label=labels[0], texture=tex)
    s.paint(posterior, echo=rng.uniform(1.3, 2.0), label=labels[1], texture=tex)
    canal = transform(axis[3:-3], c, angle)
    s.stroke(canal, max(3.0, half_w * 0.25), echo=0.2)  # endocervical mucosa
    s.line(canal, strength=rng.uniform(1.5, 3.0), thickness=2)
    for side in (upper, lower):
        s.line(transform(side, c, angle), strength=0.6, thickness=1.5)
    for _ in range(rng.integers(0, 3)):  # Nabothian cysts inside the stroma
        p = transform(np.array([[rng.uniform(-0.35, 0.35) * length, rng.choice([-1, 1]) * half_w * 0.5]]), c, angle)[0]
        s.paint(ellipse_points(p, (half_w * 0.2,) * 2), echo=ANECHOIC)
    ends = canal[[0, -1]]
    return ends[::-1] if flip > 0 else ends


@recipe("cervix")
def _cervix_seg(s, rng, cls):
    cervix(s, rng, (1, 1))


@recipe("cervix_lips")
def _cervix_lips(s, rng, cls):
    cervix(s, rng, (1, 2))


@recipe("cervical_canal_landmarks")
def _cervix_landmarks(s, rng, cls):
    return cervix(s, rng, (None, None))


def symphysis_and_head(s: Scene, rng: np.random.Generator, labels: tuple[int | None, int | None]) -> np.ndarray:
    """Transperineal intrapartum view: pubic symphysis (bright, shadowing) upper left and the
    fetal head below right. Returns [symphysis superior end, inferior end, head tangent point]:
    the point where a line from the inferior end touches the skull (angle of progression)."""
    soft_tissue(s, 0.8, 0.4)
    length = rng.uniform(0.2, 0.3) * s.unit
    sym_c = s.random_point((0.2, 0.4), (0.22, 0.45))
    angle = rng.uniform(-60, -30)  # superior end up-left, inferior end down-right
    sym = ellipse_points(sym_c, (length / 2, length * 0.12), angle)
    s.paint(sym, echo=rng.uniform(1.5, 2.5), attenuation=25.0, label=labels[0])
    s.line(sym, 3.0, 2, closed=True)
    ends = transform(np.array([[-length / 2, 0.0], [length / 2, 0.0]]), sym_c, angle)
    superior, inferior = ends[np.argsort(ends[:, 1])]
    radius = rng.uniform(0.22, 0.3) * s.unit
    head_c = inferior + direction(rng.uniform(-60, -20)) * (radius + rng.uniform(0.08, 0.2) * s.unit)
    outline = ellipse_points(head_c, (radius, radius * rng.uniform(0.85, 1.0)), rng.uniform(0, 180), n=360)
    s.paint(outline, echo=rng.uniform(0.2, 0.5), attenuation=1.0, label=labels[1], texture=s.texture(0.04, 0.4))
    s.line(outline, strength=rng.uniform(3.0, 5.0), thickness=max(2.0, 0.02 * s.unit), closed=True, attenuation=6.0)
    axis = superior - inferior
    to_contour = outline - inferior
    cos = to_contour @ axis / (np.linalg.norm(to_contour, axis=1) * np.linalg.norm(axis))
    tangent = outline[np.argmin(cos)]  # largest angle from the symphysis axis
    return np.stack([superior, inferior, tangent])


@recipe("head_symphysis")
def _head_symphysis(s, rng, cls):
    symphysis_and_head(s, rng, (1, 2))


@recipe("intrapartum_landmarks")
def _intrapartum(s, rng, cls):
    return symphysis_and_head(s, rng, (None, None))


@recipe("orientation_sacrum")
def _orientation_sacrum(s, rng, cls):
    """Sagittal fetal spine: a tapering, gently curved chain of vertebral ossification
    centres (large at the lumbar end, small at the sacral tip). The class is the
    direction of the sacral tip."""
    amniotic_background(s, rng)
    angle = 45.0 * cls + rng.uniform(-12, 12)
    length = rng.uniform(0.4, 0.55) * s.unit
    c = s.random_point((0.5, 0.58), (0.45, 0.55))
    body = ellipse_points(c, (length * 0.62, length * 0.24), angle)
    s.paint(body, echo=0.8, attenuation=1.2, texture=s.texture(0.04, 0.4))
    n = 9
    u = np.linspace(-0.5, 0.5, n) * length
    curve = rng.uniform(0.05, 0.12) * length
    for k, x in enumerate(u):
        size = length * (0.045 - 0.03 * k / (n - 1))
        for row in (-1, 1):
            p = transform(np.array([[x, row * size * 1.6 + curve * (2 * x / length) ** 2]]), c, angle)[0]
            s.line(ellipse_points(p, (size, size * 0.7), angle), 4.0, 2, closed=True, attenuation=25.0)
    skin = transform(np.stack([u * 1.1, np.full(n, length * 0.18) + curve * (2 * u / length) ** 2], 1), c, angle)
    s.line(skin, 1.5, 2)


@recipe("fetal_planes")
def _fetal_planes(s, rng, cls):
    """Six standard-plane templates: abdomen, brain, femur, thorax, maternal cervix, other."""
    if cls == 4:
        cervix(s, rng, (None, None))
        return
    amniotic_background(s, rng)
    if cls == 0:
        fetal_abdomen(s, rng, labelled=False)
    elif cls == 1:
        a = rng.uniform(0.22, 0.32) * s.unit
        fetal_head(s, rng, s.random_point((0.48, 0.58), (0.4, 0.6)), (a, a * rng.uniform(0.7, 0.85)),
                   rng.uniform(-40, 40), label=None)
    elif cls == 2:
        femur(s, rng)
    elif cls == 3:
        fetal_thorax(s, rng, label=None)
    else:  # other: limbs, cord and fluid without a standard plane
        for _ in range(rng.integers(1, 4)):
            p = s.random_point((0.3, 0.8), (0.2, 0.8))
            q = p + direction(rng.uniform(0, 360)) * rng.uniform(0.05, 0.15) * s.unit
            s.paint(ellipse_points((p + q) / 2, (rng.uniform(0.08, 0.15) * s.unit, 0.05 * s.unit),
                                   rng.uniform(0, 180)), echo=0.8)
            s.line(np.array([p, q]), 3.0, 3, attenuation=60.0)


# --------------------------------------------------------------------------- heart, vessels
@recipe("cardiac_apical")
def _cardiac(s, rng, cls):
    """Apical view: left ventricle (1) with the apex towards the probe, its myocardium (2),
    left atrium (3) below the mitral plane; right heart chambers beside it are unlabelled."""
    soft_tissue(s, 0.6, 0.4)
    angle = rng.uniform(-12, 12) - 90.0  # long axis points down the sector
    lv_len = rng.uniform(0.27, 0.33) * s.unit
    lv_w = lv_len * rng.uniform(0.38, 0.5)
    wall = rng.uniform(0.05, 0.08) * s.unit
    apex = s.at(rng.uniform(0.08, 0.14), rng.uniform(0.47, 0.58))
    base = apex + direction(angle) * lv_len * 2 * 0.9
    centre = apex + direction(angle) * (lv_len + wall)

    def truncated(a: float, b: float) -> np.ndarray:  # ellipse cut flat at the mitral plane
        local = ellipse_points((0, 0), (a, b), 0.0)
        local[:, 0] = np.minimum(local[:, 0], lv_len * 0.8)
        return transform(local, centre, angle)

    side = -1.0 if rng.random() < 0.85 else 1.0  # right heart usually on the screen left
    rv_c = centre + direction(angle + 90 * side) * (lv_w + wall * 2.5 + lv_w * 0.7)
    s.paint(ellipse_points(rv_c, (lv_len * 0.8, lv_w * 0.75), angle), echo=0.03, attenuation=0.3)
    s.line(ellipse_points(rv_c, (lv_len * 0.8, lv_w * 0.75), angle), 0.6, 2, closed=True)
    ra_c = rv_c + direction(angle) * lv_len * 1.4
    s.paint(ellipse_points(ra_c, (lv_len * 0.38, lv_w * 0.7), angle), echo=0.03, attenuation=0.3)
    s.paint(truncated(lv_len + wall, lv_w + wall), echo=rng.uniform(0.6, 1.3), label=2,
            texture=s.texture(0.03, 0.4))
    s.paint(truncated(lv_len, lv_w), echo=rng.uniform(0.01, 0.06), attenuation=0.3, label=1)
    la_c = base + direction(angle) * lv_len * 0.42
    la = blob_points(la_c, (lv_len * 0.42, lv_w * rng.uniform(0.8, 1.05)), angle, rng, 0.06)
    s.paint(la, echo=rng.uniform(0.01, 0.06), attenuation=0.3, label=3)
    s.line(la, 0.8, 2, closed=True)
    for k in (-1, 1):  # mitral leaflets
        hinge = base + direction(angle + 90) * k * lv_w * 0.9
        s.line(np.array([hinge, hinge - direction(angle) * lv_len * 0.25 + direction(angle + 90) * -k * lv_w * 0.2]),
               2.0, 2)
    s.line(truncated(lv_len + wall * 1.3, lv_w + wall * 1.3)[18:55], 1.5, 2)  # pericardium


@recipe("carotid_vessel")
def _carotid(s, rng, cls):
    """Longitudinal carotid artery: anechoic lumen (1) between bright intima-media walls,
    with the compressible jugular vein above it and occasional plaque."""
    soft_tissue(s, 0.9, 0.35)
    fascia = skin_layers(s, rng, 0.1)
    s.paint(s.band(fascia, fascia + rng.uniform(0.1, 0.18), wobble=0.02), echo=0.45, texture=s.texture(0.05, 0.3))
    x = np.linspace(-0.1, 1.1, 40) * s.probe.width
    depth = rng.uniform(0.45, 0.62) * s.unit
    y = depth + rng.uniform(-0.12, 0.12) * (x - x.mean()) + rng.uniform(-0.04, 0.04) * s.unit * np.sin(
        x / s.probe.width * np.pi * rng.uniform(0.5, 1.5))
    radius = rng.uniform(0.07, 0.12) * s.unit * (1 + 0.08 * np.sin(x / s.probe.width * 4 + rng.uniform(0, 6)))
    jug = rng.uniform(0.015, 0.05) * s.unit
    j_y = y - radius - rng.uniform(0.03, 0.08) * s.unit - jug
    s.paint(np.concatenate([np.stack([x, j_y - jug], 1), np.stack([x, j_y + jug], 1)[::-1]]),
            echo=0.02, attenuation=FLUID_ATTENUATION)
    upper, lower = np.stack([x, y - radius], 1), np.stack([x, y + radius], 1)
    s.paint(np.concatenate([upper, lower[::-1]]), echo=rng.uniform(0.004, 0.03),
            attenuation=FLUID_ATTENUATION, label=1)
    for wall, k in ((upper, -1), (lower, 1)):
        s.line(wall + [0, k * 2.0], strength=rng.uniform(1.5, 3.0), thickness=2)
        s.line(wall + [0, k * 5.0], strength=rng.uniform(2.0, 4.0), thickness=2)
    if rng.random() < 0.3:  # plaque on the far wall: not lumen
        i = int(rng.integers(8, 32))
        plaque = ellipse_points(lower[i], (rng.uniform(0.06, 0.12) * s.unit, radius[i] * rng.uniform(0.2, 0.45)))
        s.paint(plaque, echo=rng.uniform(1.5, 4.0), attenuation=6.0, label=0)


# --------------------------------------------------------------------------- lung
def lung_scene(s: Scene, rng: np.random.Generator, lung_label: int | None = None) -> float:
    """Chest wall, rib shadows and the bright pleural line; the aerated lung below the
    pleura (between the rib shadows) gets ``lung_label``. Returns the pleural depth."""
    soft_tissue(s, 0.8, 0.4)
    pleura = rng.uniform(0.15, 0.3)
    s.paint(s.band(-0.1, pleura, wobble=0.01), echo=0.6, texture=s.texture(0.03, 0.5))
    for k in range(int(rng.integers(1, 3))):
        s.line(s.arc(pleura * rng.uniform(0.3, 0.8), -0.05, 1.05), 1.2, 1.5)
    s.paint(s.band(pleura, 1.2), echo=0.12, attenuation=0.6, texture=s.texture(0.1, 0.3))
    ribs = sorted(rng.uniform(0.0, 1.0, int(rng.integers(1, 3))))
    edges = [-0.05]
    for t in ribs:
        w = rng.uniform(0.1, 0.16)
        edges += [t - w / 2, t + w / 2]
        s.line(s.arc(pleura - 0.03, t - w / 2, t + w / 2, n=12), 4.0, 3, attenuation=BONE_ATTENUATION)
    edges.append(1.05)
    if lung_label is not None:
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a > 0.02:
                s.paint(s.band(pleura, 1.2, a, b), label=lung_label)
    s.line(s.arc(pleura, -0.05, 1.05), rng.uniform(2.5, 4.0), 2)
    return pleura


def a_lines(s: Scene, rng: np.random.Generator, pleura: float) -> None:
    """Horizontal reverberations of the pleura at multiples of its depth: normal aerated lung."""
    for k in range(2, 6):
        if k * pleura < 1.0:
            s.line(s.arc(k * pleura, -0.05, 1.05), 2.2 * 0.75 ** k * rng.uniform(0.7, 1.2), 2)


def b_lines(s: Scene, rng: np.random.Generator, pleura: float, n: int) -> None:
    """Vertical comet-tail artefacts from the pleura to the bottom: interstitial syndrome."""
    for _ in range(n):
        t = rng.uniform(0.1, 0.9)
        s.line(s.ray(t, pleura, 1.0), rng.uniform(1.2, 2.5), max(3.0, rng.uniform(0.02, 0.05) * s.unit))


def consolidation(s: Scene, rng: np.random.Generator, pleura: float, size: float) -> None:
    """Tissue-like (hepatised) lung under the pleura with bright air bronchograms."""
    t = rng.uniform(0.25, 0.75)
    region = s.band(pleura, pleura + size * rng.uniform(0.7, 1.3), t - size, t + size, wobble=0.04)
    s.paint(region, echo=rng.uniform(0.8, 1.5), attenuation=1.4, texture=s.texture(0.03, 0.5))
    for _ in range(rng.integers(2, 8)):
        p = s.at(pleura + rng.uniform(0.1, 0.9) * size, t + rng.uniform(-0.7, 0.7) * size)
        s.line(np.array([p, p + direction(rng.uniform(0, 360)) * rng.uniform(2, 10)]), 3.0, 2)


@recipe("lung_field")
def _lung_field(s, rng, cls):
    pleura = lung_scene(s, rng, lung_label=1)
    a_lines(s, rng, pleura)
    b_lines(s, rng, pleura, int(rng.integers(0, 3)))


@recipe("lung_normal_abnormal")
def _lung_2cls(s, rng, cls):
    pleura = lung_scene(s, rng)
    if cls == 0:
        a_lines(s, rng, pleura)
        b_lines(s, rng, pleura, int(rng.random() < 0.3))  # up to one B-line is normal
    else:
        if rng.random() < 0.35:
            a_lines(s, rng, pleura)
        b_lines(s, rng, pleura, int(rng.integers(2, 6)))
        if rng.random() < 0.4:
            consolidation(s, rng, pleura, rng.uniform(0.1, 0.25))


@recipe("lung_patterns")
def _lung_3cls(s, rng, cls):
    """0 covid: many B-lines, broken pleura, small subpleural consolidations;
    1 pneumonia: a large consolidation with air bronchograms; 2 regular: A-lines."""
    pleura = lung_scene(s, rng)
    if cls == 0:
        b_lines(s, rng, pleura, int(rng.integers(2, 7)))
        for _ in range(rng.integers(1, 5)):  # pleural gaps and small consolidations
            t = rng.uniform(0.05, 0.95)
            s.paint(s.band(pleura - 0.01, pleura + rng.uniform(0.02, 0.06), t - 0.03, t + 0.03), echo=0.5)
    elif cls == 1:
        consolidation(s, rng, pleura, rng.uniform(0.2, 0.35))
        b_lines(s, rng, pleura, int(rng.integers(0, 2)))
    else:
        a_lines(s, rng, pleura)
        b_lines(s, rng, pleura, int(rng.random() < 0.3))


# --------------------------------------------------------------------------- abdomen
@recipe("abdominal_organs")
def _organs(s, rng, cls):
    """liver, kidney, spleen, bladder, gallbladder, bowel."""
    soft_tissue(s, 0.9, 0.4)
    wall = rng.uniform(0.05, 0.1)
    s.paint(s.band(-0.1, wall, wobble=0.01), echo=0.5, texture=s.texture(0.03, 0.5))
    s.line(s.arc(wall, -0.05, 1.05), 1.5, 1.5)
    size = rng.uniform(0.85, 1.15) * s.unit
    c = s.random_point((0.45, 0.55), (0.42, 0.58))
    angle = rng.uniform(-30, 30)
    if cls == 0:
        liver_background(s, rng)
    elif cls == 1:  # kidney: bright sinus, hypoechoic cortex and pyramids, bright capsule
        s.echo[:] = 1.6 * s.texture(0.05, 0.5)
        out = blob_points(c, (0.3 * size, 0.15 * size), angle, rng, 0.05)
        s.paint(out, echo=0.45, texture=s.texture(0.03, 0.3))
        s.line(out, 2.0, 2, closed=True)
        for phi in np.linspace(0, 360, 7)[:-1]:
            p = transform(np.array([[0.18 * size * np.cos(np.deg2rad(phi)), 0.08 * size * np.sin(np.deg2rad(phi))]]),
                          c, angle)[0]
            s.paint(ellipse_points(p, (0.03 * size, 0.02 * size), angle + phi), echo=0.1)
        s.paint(blob_points(c, (0.16 * size, 0.05 * size), angle, rng, 0.3), echo=rng.uniform(3.0, 5.0))
    elif cls == 2:  # spleen: homogeneous crescent under a curved diaphragm
        centre = s.at(rng.uniform(0.9, 1.1), rng.uniform(0.4, 0.6))
        outer = ellipse_points(centre, (0.75 * size, 0.7 * size), angle)
        s.paint(outer, echo=rng.uniform(1.2, 1.6), texture=s.texture(0.03, 0.15))
        s.paint(ellipse_points(centre + [0, 0.12 * size], (0.55 * size, 0.5 * size), angle), echo=0.5,
                texture=s.texture(0.05, 0.5))
        s.line(outer, 3.0, 3, closed=True)
    elif cls == 3:  # bladder: large anechoic rounded box, posterior enhancement
        box = blob_points(c, (0.3 * size, 0.22 * size), angle * 0.3, rng, 0.05)
        s.paint(box, echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
        s.line(box, 1.5, 2.5, closed=True)
    elif cls == 4:  # gallbladder: pear-shaped, in liver, sometimes a shadowing stone
        liver_background(s, rng)
        gb = blob_points(c, (0.17 * size, 0.07 * size), angle, rng, 0.1)
        s.paint(gb, echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
        s.line(gb, 2.0, 2, closed=True)
        if rng.random() < 0.5:
            stone = c + [rng.uniform(-0.08, 0.08) * size, 0.04 * size]
            s.line(ellipse_points(stone, (0.025 * size,) * 2)[18:36], 5.0, 3, attenuation=BONE_ATTENUATION)
    else:  # bowel: loops with layered walls, bright gas with dirty shadowing
        for _ in range(rng.integers(2, 5)):
            p = s.random_point((0.2, 0.75), (0.1, 0.9))
            loop = ellipse_points(p, (rng.uniform(0.06, 0.12) * size, rng.uniform(0.04, 0.08) * size),
                                  rng.uniform(0, 180))
            s.paint(loop, echo=0.35)
            s.line(loop, 1.5, 2, closed=True)
            s.line(np.array([p - [0.03 * size, 0], p + [0.03 * size, 0]]), 5.0, 3, attenuation=40.0)
    if cls != 5:
        distractors(s, rng, int(rng.integers(0, 3)))


# --------------------------------------------------------------------------- detection only
@recipe("spinal_cord_lesion")
def _spinal_cord(s, rng, cls):
    """Sagittal spinal cord: hypoechoic cord with bright pia and central echo in anechoic
    CSF, dura above and vertebral bodies below; an intramedullary lesion (1)."""
    soft_tissue(s, 0.9, 0.4)
    skin_layers(s, rng, 0.08)
    depth = rng.uniform(0.4, 0.52) * s.unit
    x = np.linspace(-0.1, 1.1, 30) * s.probe.width
    tilt = rng.uniform(-0.15, 0.15)
    y = s.probe.y0 + depth + tilt * (x - x.mean())
    half = rng.uniform(0.07, 0.1) * s.unit
    csf = half + rng.uniform(0.04, 0.08) * s.unit
    band = lambda h: np.concatenate([np.stack([x, y - h], 1), np.stack([x, y + h], 1)[::-1]])
    s.paint(band(csf), echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
    s.paint(band(half), echo=rng.uniform(0.15, 0.35), attenuation=1.2, texture=s.texture(0.04, 0.3))
    for k in (-1, 1):
        s.line(np.stack([x, y + k * half], 1), 2.0, 2)
        s.line(np.stack([x, y + k * csf], 1), 3.0, 3)
    s.line(np.stack([x, y], 1), 1.2, 1.5)
    for xv in np.arange(rng.uniform(0, 0.3), 1.1, 0.35) * s.probe.width:  # vertebral bodies
        p = np.array([xv, y.mean() + tilt * (xv - x.mean()) + csf + 0.08 * s.unit])
        s.line(np.array([p - [0.12 * s.unit, 0], p + [0.12 * s.unit, 0]]), 4.0, 3, attenuation=BONE_ATTENUATION)
    cx = rng.uniform(0.25, 0.75) * s.probe.width
    cy = s.probe.y0 + depth + tilt * (cx - x.mean())
    length = rng.uniform(0.08, 0.25) * s.unit
    pts = blob_points((cx, cy), (length, half * rng.uniform(0.6, 0.95)), np.rad2deg(-np.arctan(tilt)), rng, 0.12)
    s.paint(pts, echo=rng.choice([rng.uniform(1.5, 4.0), rng.uniform(0.01, 0.06)]), label=1,
            texture=s.texture(0.02, 0.6))


@recipe("uterine_fibroid")
def _fibroid(s, rng, cls):
    """Uterus with endometrial stripe, bladder anteriorly; a round hypoechoic, whorled
    fibroid (1) with posterior shadowing."""
    soft_tissue(s, 0.8, 0.4)
    if rng.random() < 0.7:
        s.paint(blob_points(s.at(0.12, rng.uniform(0.3, 0.7)), (0.35 * s.unit, 0.12 * s.unit), 0, rng, 0.05),
                echo=ANECHOIC, attenuation=FLUID_ATTENUATION)
    uc = s.random_point((0.45, 0.55), (0.4, 0.6))
    ua = rng.uniform(0.3, 0.4) * s.unit
    angle = rng.uniform(-25, 25)
    uterus = blob_points(uc, (ua, ua * 0.55), angle, rng, 0.05)
    s.paint(uterus, echo=1.1, texture=s.texture(0.04, 0.3))
    stripe = transform(np.array([[-ua * 0.7, 0], [ua * 0.7, 0]]), uc, angle)
    s.stroke(stripe, max(3.0, 0.04 * s.unit), echo=0.3)
    s.line(stripe, 2.5, 2)
    c = uc + direction(rng.uniform(0, 360)) * rng.uniform(0.1, 0.5) * ua * np.array([1.0, 0.5])
    r = rng.uniform(0.1, 0.22) * s.unit
    fibroid = blob_points(c, (r, r * rng.uniform(0.8, 1.0)), rng.uniform(0, 180), rng, 0.06)
    s.paint(fibroid, echo=rng.uniform(0.25, 0.7), attenuation=rng.uniform(2.5, 5.0), label=1)
    for k in (0.4, 0.7):  # whorls
        s.line(blob_points(c, (r * k, r * k * 0.9), rng.uniform(0, 180), rng, 0.1), 0.5, 1, closed=True)
