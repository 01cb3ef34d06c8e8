"""`ofa-prepare inspect SHARDS`: what a researcher checks before training on a shard folder.

    ofa-prepare inspect shards/my_captions --num 16 --sheet my_captions.png

Prints, per split: samples and shards, skips by reason with the first skipped rows (from the manifest), samples
per task, and field statistics (text lengths in words, list lengths, answer and label counts, box sizes
relative to the image, image sizes); writes a contact sheet PNG of N random samples (seeded) with their text
and boxes drawn, so a wrong box format shows at a glance. `--json FILE` also writes the statistics as JSON.
SHARDS: folders written by `ofa-prepare` (with manifest.json) or .tar shard files.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common.errors import PrepareError
from data_recipes.common.manifest import MANIFEST_NAME
from data_recipes.contact_sheet import draw_contact_sheet
from ofa_lightning.data.shards import ends_cleanly

NAME = "inspect"
KIND = "generator"
DESCRIPTION = "inspect shards: counts per split and task, field statistics, skips, a contact sheet PNG"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")
FIRST_SKIPS = 5
#: Field names -> the task they suggest, for shards without a recorded task (first match wins).
_TASK_HINTS = (
    ("question", "vqa"),
    ("expression", "grounding"),
    ("boxes", "detection"),
    ("captions", "caption"),
    ("caption", "caption"),
    ("class_name", "image_classification"),
    ("hypothesis", "snli_ve"),
    ("sentence1", "glue"),
    ("article", "gigaword"),
    ("codes", "image_infilling"),
    ("text", "text"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", type=Path, help="shard folders (with manifest.json) or .tar files")
    parser.add_argument("--splits", default=None, help="comma-separated splits to read (default: all)")
    parser.add_argument("--num", type=int, default=16, help="samples on the contact sheet (default 16; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed picking the contact sheet's samples")
    parser.add_argument(
        "--sheet",
        type=Path,
        default=Path("contact_sheet.png"),
        help="contact sheet PNG to write (default ./contact_sheet.png)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the statistics to this JSON file")


def _tar_files(spec: Path, splits: set[str] | None) -> list[tuple[str, Path, dict | None]]:
    """(split, tar path, manifest or None) for a folder or a tar file."""
    if spec.is_file():
        return [(spec.name.split("-")[0], spec, None)]
    if not spec.is_dir():
        raise PrepareError(f"expected a shard folder or a .tar file at {spec}, but it does not exist")
    manifest_path = spec / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return [
            (split, spec / shard["file"], manifest)
            for split, state in manifest["splits"].items()
            if splits is None or split in splits
            for shard in state["shards"]
        ]
    tars = sorted(spec.glob("*.tar"))
    if not tars:
        raise PrepareError(f"{spec} holds no manifest.json and no .tar shards")
    return [(t.name.split("-")[0], t, None) for t in tars if splits is None or t.name.split("-")[0] in splits]


def iter_samples(
    path: Path, skips: dict[str, list[str]] | None = None
) -> Iterator[tuple[str, dict[str, Any], bytes | None, str | None]]:
    """(key, JSON fields, image bytes or None, image extension) of each sample of one tar shard.

    With ``skips`` (reason -> names), a sample whose JSON does not parse is a ``bad json`` skip and a shard that
    cannot be read to the end gives the samples before the damage and an ``unreadable shard`` skip; without it
    both raise :class:`PrepareError`."""

    def finish(key, members):
        try:
            fields = json.loads(members["json"].decode("utf-8")) if "json" in members else {}
            if not isinstance(fields, dict):
                raise ValueError(f"a JSON {type(fields).__name__}, not an object")
        except (UnicodeDecodeError, ValueError) as exc:
            if skips is None:
                raise PrepareError(f"{path}: sample {key}: bad json ({exc})") from None
            skips.setdefault("bad json", []).append(f"{key} in {path.name}")
            return None
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        return key, fields, members.get(ext) if ext else None, ext

    key, members = None, {}
    try:
        with tarfile.open(path, "r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                name_key, _, ext = base.partition(".")
                if name_key != key and key is not None:
                    if (sample := finish(key, members)) is not None:
                        yield sample
                    members = {}
                key = name_key
                members[ext.lower()] = tar.extractfile(info).read()
            if key is not None:
                with open(path, "rb") as handle:
                    if not ends_cleanly(handle, tar.offset):
                        raise tarfile.ReadError(
                            "unreadable after the last sample read (a damaged header, or cut short)"
                        )
    except (tarfile.TarError, OSError) as exc:
        if skips is None:
            raise PrepareError(f"{path} is not a readable tar shard: {exc}") from None
        skips.setdefault("unreadable shard", []).append(f"{path.name} ({exc})")
        return  # the sample being read when the damage came may be incomplete
    if key is not None and (sample := finish(key, members)) is not None:
        yield sample


def task_of(fields: dict[str, Any], recorded: str | None) -> str:
    if recorded:
        return recorded
    return next((task for name, task in _TASK_HINTS if name in fields), "fields")


def _summary(values: list[float], unit: str = "") -> str:
    if not values:
        return "-"
    return (
        f"{min(values):.3g}-{max(values):.3g}{unit} (median {statistics.median(values):.3g}{unit}, "
        f"mean {statistics.fmean(values):.3g}{unit})"
    )


def _boxes_of(fields: dict[str, Any]) -> list[list[float]]:
    boxes = []
    for name, value in fields.items():
        if name == "boxes" or name.endswith("_boxes"):
            boxes += [b for b in value or [] if isinstance(b, list) and len(b) == 4]
        elif (name == "box" or name.endswith("_box")) and isinstance(value, list) and len(value) == 4:
            boxes.append(value)
    return boxes


class SplitStats:
    """Streaming statistics of one split's samples."""

    def __init__(self):
        self.samples = 0
        self.tasks: Counter = Counter()
        self.present: Counter = Counter()
        self.words: dict[str, list[int]] = defaultdict(list)
        self.list_lengths: dict[str, list[int]] = defaultdict(list)
        self.answers: Counter = Counter()
        self.labels: Counter = Counter()
        self.box_width: list[float] = []
        self.box_height: list[float] = []
        self.box_area: list[float] = []
        self.image_sizes: Counter = Counter()
        self.image_formats: Counter = Counter()

    def add(self, fields: dict[str, Any], ext: str | None, task: str) -> None:
        self.samples += 1
        self.tasks[task] += 1
        for name, value in fields.items():
            if name in ("id", "source", "split", "row", "width", "height", "image_id", "file_name"):
                continue
            self.present[name] += 1
            if isinstance(value, str):
                self.words[name].append(len(value.split()))
            elif isinstance(value, list) and name not in ("box", "boxes") and not name.endswith(("_box", "_boxes")):
                self.list_lengths[name].append(len(value))
                self.words[name] += [len(v.split()) for v in value if isinstance(v, str)]
        conf = fields.get("answer_conf")
        if isinstance(conf, dict) and conf:
            self.answers[max(conf, key=conf.get)] += 1
        for name in ("labels", "class_name", "label"):
            value = fields.get(name)
            if isinstance(value, list):
                self.labels.update(str(v) for v in value)
            elif isinstance(value, str):
                self.labels[value] += 1
            if value is not None:
                break
        width, height = fields.get("width"), fields.get("height")
        if ext is not None:
            self.image_formats[ext] += 1
        if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
            self.image_sizes[f"{width}x{height}"] += 1
            for x0, y0, x1, y1 in _boxes_of(fields):
                self.box_width.append((x1 - x0) / width)
                self.box_height.append((y1 - y0) / height)
                self.box_area.append((x1 - x0) * (y1 - y0) / (width * height))

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "tasks": dict(self.tasks),
            "fields_present": dict(self.present),
            "words": {
                k: {"min": min(v), "max": max(v), "mean": statistics.fmean(v)} for k, v in self.words.items() if v
            },
            "list_lengths": {
                k: {"min": min(v), "max": max(v), "mean": statistics.fmean(v)}
                for k, v in self.list_lengths.items()
                if v
            },
            "top_answers": dict(self.answers.most_common(10)),
            "top_labels": dict(self.labels.most_common(10)),
            "boxes": len(self.box_area),
            "box_area_fraction": _quantiles(self.box_area),
            "box_width_fraction": _quantiles(self.box_width),
            "box_height_fraction": _quantiles(self.box_height),
            "image_sizes": dict(self.image_sizes.most_common(10)),
            "image_formats": dict(self.image_formats),
        }

    def lines(self) -> list[str]:
        out = [f"  samples per task: {', '.join(f'{t} {n}' for t, n in self.tasks.most_common())}"]
        for name, count in sorted(self.present.items()):
            parts = [f"{count}/{self.samples}"]
            if self.list_lengths.get(name):
                parts.append(f"{_summary(self.list_lengths[name])} items")
            if self.words.get(name):
                parts.append(f"{_summary(self.words[name])} words")
            out.append(f"    {name:<22} " + "; ".join(parts))
        if self.answers:
            out.append("  top answers: " + ", ".join(f"{a} {n}" for a, n in self.answers.most_common(8)))
        if self.labels:
            out.append(
                f"  labels ({len(self.labels)} distinct): "
                + ", ".join(f"{a} {n}" for a, n in self.labels.most_common(8))
            )
        if self.box_area:
            out.append(
                f"  boxes: {len(self.box_area)}; width {_summary(self.box_width)} of the image width, "
                f"height {_summary(self.box_height)}, area {_summary(self.box_area)}"
            )
        if self.image_sizes:
            out.append(
                f"  images: {sum(self.image_sizes.values())} "
                f"({', '.join(f'{e} {n}' for e, n in self.image_formats.items())}); sizes: "
                + ", ".join(f"{s} x{n}" for s, n in self.image_sizes.most_common(5))
            )
        return out


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1]}


def _manifest_lines(manifest: dict[str, Any], split: str) -> list[str]:
    state = manifest["splits"].get(split, {})
    lines = [
        f"  written: {state.get('num_samples', 0)} samples in {len(state.get('shards', []))} shard(s); "
        f"skipped: {state.get('num_skipped', 0)}" + ("" if state.get("complete") else " (INCOMPLETE split)")
    ]
    if state.get("skip_reasons"):
        lines.append("  skip reasons: " + ", ".join(f"{r} {n}" for r, n in state["skip_reasons"].items()))
    for skip in state.get("skipped", [])[:FIRST_SKIPS]:
        lines.append(f"    {skip['origin']}: {skip['reason']}")
    if state.get("warnings"):
        lines.append("  warnings: " + ", ".join(f"{w} {n}" for w, n in state["warnings"].items()))
    return lines


def inspect(
    specs: list[Path], splits: set[str] | None = None, num: int = 16, seed: int = 0, sheet: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """(statistics per folder and split, printable report lines); writes the contact sheet when asked."""
    rng = random.Random(seed)
    picked: list[tuple] = []
    seen = 0
    report: dict[str, Any] = {}
    lines: list[str] = []
    for spec in specs:
        files = _tar_files(spec, splits)
        manifest = next((m for _, _, m in files if m is not None), None)
        recorded = (manifest or {}).get("args", {}).get("task") if manifest else None
        title = f"{spec}" + (f" (recipe {manifest['recipe']})" if manifest else "")
        lines.append(title)
        per_split: dict[str, SplitStats] = {}
        read_skips: dict[str, dict[str, list[str]]] = {}
        for split, path, _ in files:
            stats = per_split.setdefault(split, SplitStats())
            for key, fields, image, ext in iter_samples(path, read_skips.setdefault(split, {})):
                stats.add(fields, ext, task_of(fields, recorded))
                seen += 1
                item = (split, key, fields, image)
                if len(picked) < num:
                    picked.append(item)
                elif num and rng.random() < num / seen:
                    picked[rng.randrange(num)] = item
        names = list(per_split) + [
            s for s in (manifest or {}).get("splits", {}) if s not in per_split and (splits is None or s in splits)
        ]
        report[str(spec)] = {}
        for split in names:
            stats = per_split.get(split, SplitStats())
            lines.append(f"split {split}:")
            if manifest:
                lines += _manifest_lines(manifest, split)
                state = manifest["splits"].get(split, {})
                report[str(spec)][split] = {
                    **stats.as_dict(),
                    "skipped": state.get("num_skipped", 0),
                    "skip_reasons": state.get("skip_reasons", {}),
                }
            else:
                report[str(spec)][split] = stats.as_dict()
            skipped_now = read_skips.get(split) or {}
            if skipped_now:  # bad samples and damaged shards met while inspecting: counted and named
                report[str(spec)][split]["read_skips"] = {r: len(v) for r, v in skipped_now.items()}
                lines.append(
                    "  unreadable while inspecting: "
                    + "; ".join(f"{r} {len(v)} (first: {v[0]})" for r, v in skipped_now.items())
                )
            lines += stats.lines()
    if sheet is not None and num > 0:
        if picked:
            draw_contact_sheet(picked, sheet)
            lines.append(f"contact sheet: {sheet} ({len(picked)} random samples, seed {seed})")
        else:
            lines.append("contact sheet: none (no samples)")
    return report, lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    splits = {s.strip() for s in args.splits.split(",") if s.strip()} if args.splits else None
    report, lines = inspect(list(args.shards), splits, args.num, args.seed, args.sheet)
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report
