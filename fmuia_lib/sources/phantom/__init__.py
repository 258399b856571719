"""The procedural ultrasound phantom: every subtask of the manifest, in the challenge layout.

``physics`` forms B-mode images (probe geometry, speckle, attenuation, log compression),
``shapes`` holds the scene that recipes paint, ``recipes`` has one anatomy recipe per
manifest ``phantom_recipe``, ``render`` turns a recipe into an image and its label, and
``generate`` writes a seeded, reproducible data set (``fmuia data phantom``).
"""
from .generate import generate_phantom, phantom_main
from .render import PhantomError, Sample, render, render_sample

__all__ = ["generate_phantom", "phantom_main", "render_sample", "render", "Sample", "PhantomError"]
