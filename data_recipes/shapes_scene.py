"""Random scenes of coloured geometric shapes, drawn with PIL: the geometry half of the `shapes` dataset.

A scene holds 1-4 filled shapes in disjoint square slots on a plain or gradient background. Each shape is
drawn through its own mask, so its box is exactly the drawn pixels' extent (xyxy, right/bottom exclusive)
and, shapes being filled and never overlapping, the pixel at a box centre has the shape's colour.
Everything depends only on the random generator passed in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 70),
    "blue": (40, 85, 225),
    "yellow": (245, 205, 35),
    "purple": (140, 60, 190),
    "orange": (245, 135, 25),
    "cyan": (35, 195, 205),
    "pink": (245, 115, 175),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
#: name -> (first, second) gradient colours; muted tones keep every shape colour distinct from the background
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "dark": ((20, 22, 28), (62, 64, 74)),
    "grey": ((112, 112, 116), (152, 152, 156)),
    "light": ((238, 238, 232), (200, 202, 198)),
    "beige": ((228, 218, 192), (200, 188, 160)),
    "slate": ((68, 78, 94), (102, 112, 128)),
}
GRADIENTS = ("none", "vertical", "horizontal")
#: shapes per scene, drawn uniformly from this tuple (so 2 and 3 are twice as likely as 1 and 4)
DEFAULT_COUNTS = (1, 2, 2, 3, 3, 4)
#: slot side range as fractions of the image side
DEFAULT_SHAPE_SCALE = (0.18, 0.34)


@dataclass(frozen=True)
class DrawnShape:
    shape: str
    colour: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    area: int  # number of drawn pixels

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class Scene:
    size: int
    background: str
    gradient: str
    shapes: tuple[DrawnShape, ...]


def _outline(shape: str, x0: int, y0: int, side: int) -> list[tuple[float, float]] | None:
    """Polygon points of `shape` inside the square slot (None for the circle, drawn as an ellipse)."""
    x1, y1 = x0 + side - 1, y0 + side - 1
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (side - 1) / 2
    if shape == "circle":
        return None
    if shape == "square":
        inset = round(side * 0.08)
        return [(x0 + inset, y0 + inset), (x1 - inset, y0 + inset), (x1 - inset, y1 - inset), (x0 + inset, y1 - inset)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "hexagon":
        return [(cx + r * math.cos(i * math.pi / 3), cy + r * math.sin(i * math.pi / 3)) for i in range(6)]
    raise ValueError(f"unknown shape {shape!r}")


def _slots(
    rng: random.Random, size: int, count: int, scale: tuple[float, float] = DEFAULT_SHAPE_SCALE
) -> list[tuple[int, int, int]]:
    """Up to `count` disjoint square slots (x0, y0, side), kept 4 px apart and 2 px inside the image."""
    slots: list[tuple[int, int, int]] = []
    low = max(6, round(size * scale[0]))
    high = min(size - 4, max(low + 1, round(size * scale[1])))
    for _ in range(count):
        for _attempt in range(80):
            side = rng.randint(low, high)
            x0, y0 = rng.randint(2, size - side - 2), rng.randint(2, size - side - 2)
            if all(
                x0 + side + 4 <= ox or ox + oside + 4 <= x0 or y0 + side + 4 <= oy or oy + oside + 4 <= y0
                for ox, oy, oside in slots
            ):
                slots.append((x0, y0, side))
                break
    return slots


def _background(name: str, gradient: str, size: int) -> Image.Image:
    first, second = BACKGROUNDS[name]
    if gradient == "none":
        return Image.new("RGB", (size, size), first)
    ramp = Image.linear_gradient("L").resize((size, size))
    if gradient == "horizontal":
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    return Image.composite(Image.new("RGB", (size, size), second), Image.new("RGB", (size, size), first), ramp)


def draw_scene(
    rng: random.Random,
    size: int = 128,
    counts: tuple[int, ...] = DEFAULT_COUNTS,
    shape_scale: tuple[float, float] = DEFAULT_SHAPE_SCALE,
) -> tuple[Scene, Image.Image]:
    """Samples and draws one scene; returns its description and the RGB image.

    ``counts``: the number of shapes is drawn uniformly from it; ``shape_scale``: (min, max) slot side as a
    fraction of ``size``. The defaults give the demo's scenes; e.g. ``counts=(1,), shape_scale=(0.3, 0.6)``
    gives one large shape per scene (the text-to-image test's data)."""
    count = rng.choice(tuple(counts))
    background, gradient = rng.choice(sorted(BACKGROUNDS)), rng.choice(GRADIENTS)
    image = _background(background, gradient, size)
    drawn = []
    for x0, y0, side in _slots(rng, size, count, shape_scale):
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        mask = Image.new("L", (size, size), 0)
        pen = ImageDraw.Draw(mask)
        outline = _outline(shape, x0, y0, side)
        if outline is None:
            pen.ellipse((x0, y0, x0 + side - 1, y0 + side - 1), fill=255)
        else:
            pen.polygon(outline, fill=255)
        image.paste(COLOURS[colour], mask=mask)
        box = mask.getbbox()
        area = sum(mask.histogram()[1:])
        drawn.append(DrawnShape(shape, colour, box, area))
    return Scene(size, background, gradient, tuple(drawn)), image
