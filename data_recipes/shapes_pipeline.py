"""One call from nothing to shards: generate the shapes raw data and run the real recipes on it.

    python -m data_recipes.shapes_pipeline --root demo/ --num-images 500 --seed 0
    build_shapes_shards(root, num_images, seed)

Writes root/raw/ (official raw formats) and root/shards/<recipe>/ for coco_caption, vqav2, refcoco,
snli_ve, detection and text_corpus. Used by the tests and `make demo`; it goes through the same CLI code
path as a user would, so the demo exercises the real recipes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from data_recipes import cli
from data_recipes.shapes import SPLITS, generate_shapes


def recipe_commands(raw: Path, shards: Path) -> dict[str, list[str]]:
    """The ofa-prepare argument lists that convert the shapes raw files, per recipe."""
    split_roots = [str(raw / "images" / s) for s in SPLITS]
    return {
        "coco_caption": [
            "coco_caption",
            "--karpathy-json",
            str(raw / "dataset_coco.json"),
            "--images",
            str(raw / "images"),
        ],
        "vqav2": ["vqav2", "--vqa-dir", str(raw / "vqa"), "--images", str(raw / "images")],
        "refcoco": ["refcoco", "--refer-dir", str(raw / "refcoco"), "--images", *split_roots],
        "snli_ve": ["snli_ve", "--jsonl-dir", str(raw / "snli_ve"), "--images", *split_roots],
        # labels name colour and shape ("red diamond", attribute + object as Visual Genome's): detection then
        # teaches which colour is where, which grounding ("the red diamond") and VQA ("what colour is ...") ask
        "detection": [
            "detection",
            "--ann-dir",
            str(raw / "detection"),
            "--dataset-name",
            "shapes",
            "--label-attributes",
            "color",
            "--images",
            *split_roots,
        ],
        "text_corpus": ["text_corpus", "--input", f"train={raw / 'corpus.txt'}"],
    }


def build_shapes_shards(
    root: Path,
    num_images: int = 500,
    seed: int = 0,
    image_size: int = 128,
    shard_size: int = 1000,
    quiet: bool = True,
    overwrite: bool = False,
    language: str = "en",
) -> dict[str, Any]:
    """Generates root/raw and writes root/shards/<recipe>; returns {recipe: manifest}. ``language="zh"``: the
    captions, questions, expressions, hypotheses, corpus and detection labels in Chinese."""
    root = Path(root)
    raw, shards = root / "raw", root / "shards"
    generate_shapes(raw, num_images=num_images, seed=seed, image_size=image_size, language=language)
    manifests = {}
    for name, argv in recipe_commands(raw, shards).items():
        extra = ["--out", str(shards / name), "--shard-size", str(shard_size), "--strict"]
        extra += ["--quiet"] if quiet else []
        extra += ["--overwrite"] if overwrite else []
        manifests[name] = cli.run(argv + extra)
    return manifests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_recipes.shapes_pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=Path("data/shapes"))
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--overwrite", action="store_true", help="rebuild shards that already exist")
    parser.add_argument("--language", choices=("en", "zh"), default="en", help="language of the scenes' text")
    args = parser.parse_args(argv)
    manifests = build_shapes_shards(
        args.root,
        args.num_images,
        args.seed,
        args.image_size,
        args.shard_size,
        quiet=False,
        overwrite=args.overwrite,
        language=args.language,
    )
    counts = {
        name: {split: state["num_samples"] for split, state in m["splits"].items()} for name, m in manifests.items()
    }
    print(json.dumps(counts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
