"""`ofa-prepare`: convert raw datasets into WebDataset shards, or generate the shapes dataset.

ofa-prepare --list
ofa-prepare <recipe> --help
ofa-prepare shapes --out raw/ --num-images 1000
ofa-prepare coco_caption --karpathy-json raw/dataset_coco.json --images raw/images --out shards/coco_caption
ofa-prepare my_recipes.words --input train=words.txt --out shards/words   (a recipe module of your own)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from data_recipes.common.errors import PrepareError
from data_recipes.common.options import add_common_arguments
from data_recipes.common.runner import run_recipe
from data_recipes.registry import import_recipe, is_generator, is_recipe_module, load_recipes


def build_parser(extra: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofa-prepare",
        description="Convert raw public datasets into WebDataset shards of raw samples "
        "(image bytes + JSON fields; no tokenisation), or generate the synthetic shapes dataset.",
        epilog="Run `ofa-prepare --list` for the recipes and `ofa-prepare RECIPE --help` for their inputs.",
    )
    parser.add_argument("--list", action="store_true", help="name every recipe with a one-line description")
    commands = parser.add_subparsers(dest="recipe", metavar="RECIPE")
    for name, module in load_recipes(extra).items():
        sub = commands.add_parser(
            name,
            help=module.DESCRIPTION,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if is_generator(module):
            module.add_arguments(sub)
            continue
        inputs = sub.add_argument_group(f"{name} inputs")  # created first so that --help lists it first
        add_common_arguments(sub)  # before the recipe's own, so its set_defaults can change common defaults
        module.add_arguments(inputs)
    return parser


def list_recipes() -> str:
    recipes = load_recipes()
    width = max(len(name) for name in recipes)
    return "\n".join(f"{name:<{width}}  {module.DESCRIPTION}" for name, module in recipes.items())


def run(argv: Sequence[str] | None = None) -> Any:
    """Parses and runs one command; returns the manifest (or the generator's summary). Raises PrepareError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv and argv[0] not in load_recipes() and is_recipe_module(argv[0]):  # a recipe module of your own
        extra = [argv[0]]
        argv[0] = import_recipe(argv[0]).NAME
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    if args.list:
        print(list_recipes())
        return None
    if not args.recipe:
        parser.print_help()
        return None
    module = load_recipes(extra)[args.recipe]
    if is_generator(module):
        return module.run(args)
    return run_recipe(module, args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(argv)
    except PrepareError as exc:
        print(f"ofa-prepare: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ofa-prepare: interrupted; complete shards are kept, rerun the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
