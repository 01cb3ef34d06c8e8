"""A contact sheet: samples as tiles (image with its boxes drawn, and its text below) in one PNG."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

TILE = 256
TEXT_LINES = 7
LINE_HEIGHT = 14
COLOURS = ("#ff3030", "#30c030", "#3080ff", "#ffb000", "#e040e0", "#00c8c8")
_TEXT_FIELDS = (
    "captions",
    "caption",
    "question",
    "expression",
    "class_name",
    "labels",
    "premise",
    "hypothesis",
    "label",
    "sentence1",
    "sentence2",
    "article",
    "summary",
    "text",
)


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def _texts(fields: dict[str, Any]) -> list[str]:
    out = []
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if value is None or value == [] or value == "":
            continue
        if isinstance(value, list):
            shown = " | ".join(str(v) for v in value[:3]) + (f" (+{len(value) - 3})" if len(value) > 3 else "")
        else:
            shown = str(value)
        out.append(f"{name}: {shown}")
    conf = fields.get("answer_conf")
    if isinstance(conf, dict) and conf:
        out.insert(
            1 if out else 0,
            "answer: " + ", ".join(f"{a} ({c:.2g})" for a, c in sorted(conf.items(), key=lambda kv: -kv[1])[:3]),
        )
    return out


def _boxes(fields: dict[str, Any]) -> list[tuple[list[float], str]]:
    out = []
    labels = fields.get("labels") if isinstance(fields.get("labels"), list) else []
    for name, value in fields.items():
        if name == "boxes" or name.endswith("_boxes"):
            for i, box in enumerate(value or []):
                if isinstance(box, list) and len(box) == 4:
                    out.append((box, str(labels[i]) if i < len(labels) else ""))
        elif (name == "box" or name.endswith("_box")) and isinstance(value, list) and len(value) == 4:
            out.append((value, "" if name == "box" else name))
    return out


def _tile(split: str, key: str, fields: dict[str, Any], image: bytes | None, font) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE + TEXT_LINES * LINE_HEIGHT + 6), "white")
    draw = ImageDraw.Draw(tile)
    if image is not None:
        try:
            with Image.open(io.BytesIO(image)) as img:
                img = img.convert("RGB")
                width, height = img.size
                scale = min(TILE / width, TILE / height)
                shown = img.resize((max(1, round(width * scale)), max(1, round(height * scale))))
        except Exception as exc:  # a corrupt image still gets its tile, with the error as text
            draw.text((4, 4), f"unreadable image: {exc}"[:60], fill="red", font=font)
        else:
            ox, oy = (TILE - shown.width) // 2, (TILE - shown.height) // 2
            tile.paste(shown, (ox, oy))
            for i, (box, label) in enumerate(_boxes(fields)):
                colour = COLOURS[i % len(COLOURS)]
                x0, y0, x1, y1 = (ox + box[0] * scale, oy + box[1] * scale, ox + box[2] * scale, oy + box[3] * scale)
                draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
                if label:
                    draw.text((x0 + 2, max(0, y0 - 13)), label[:24], fill=colour, font=font)
    else:
        draw.rectangle([0, 0, TILE - 1, TILE - 1], fill="#eeeeee")
        draw.text((8, TILE // 2), "(text only)", fill="grey", font=font)
    lines = [f"{split} {key}"[:40]]
    for text in _texts(fields):
        lines += textwrap.wrap(text, 40) or [""]
    for row, line in enumerate(lines[:TEXT_LINES]):
        draw.text((4, TILE + 3 + row * LINE_HEIGHT), line, fill="black", font=font)
    return tile


def draw_contact_sheet(samples: Sequence[tuple[str, str, dict[str, Any], bytes | None]], path: Path) -> Path:
    """Writes (split, key, fields, image bytes) tiles in a near-square grid to the PNG `path`."""
    font = _font()
    tiles = [_tile(split, key, fields, image, font) for split, key, fields, image in samples]
    columns = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = math.ceil(len(tiles) / columns)
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * (width + 4) + 4, rows * (height + 4) + 4), "#888888")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (4 + (i % columns) * (width + 4), 4 + (i // columns) * (height + 4)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
