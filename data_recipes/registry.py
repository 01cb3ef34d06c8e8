"""The recipes `ofa-prepare` knows, in the order `--list` shows them (public datasets, then your own data in
`generic/`, then `inspect`, which reads shards instead of writing them).

A shard recipe module defines NAME, DESCRIPTION, add_arguments(parser), available_splits(args) and
candidates(args, split) (optionally write_extras(args, out_dir)); a generator module (KIND = "generator")
defines run(args) instead. A kit recipe is one such module, listed in RECIPE_MODULES; a recipe of your own is one
such module anywhere on the Python path, named instead of a recipe: `ofa-prepare my_recipes.words ...`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from data_recipes.common.errors import PrepareError

RECIPE_MODULES = (
    "shapes",
    "coco_caption",
    "vqav2",
    "refcoco",
    "snli_ve",
    "detection",
    "imagenet",
    "glue",
    "gigaword",
    "text_corpus",
    "vq_codes",
    "vq_infilling",
    "vq_text_to_image",
    "ofa_tsv",
    "muge_caption",
    "refcoco_cn",
    "chinese_ocr",
    "generic.table",
    "generic.coco_json",
    "generic.class_folders",
    "generic.hf_dataset",
    "inspect_shards",
)


SHARD_RECIPE_API = ("NAME", "DESCRIPTION", "add_arguments", "available_splits", "candidates")
GENERATOR_API = ("NAME", "DESCRIPTION", "add_arguments", "run")


def load_recipes(extra: Sequence[str] = ()) -> dict[str, ModuleType]:
    """The kit's recipes by NAME, then those of the modules ``extra`` (import paths of your own recipes)."""
    modules = [importlib.import_module(f"data_recipes.{name}") for name in RECIPE_MODULES]
    modules += [import_recipe(name) for name in extra]
    return {module.NAME: module for module in modules}


def is_recipe_module(name: str) -> bool:
    """``name`` is an importable module path rather than a recipe name or an option."""
    if not name or name.startswith("-") or "/" in name:
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_recipe(name: str) -> ModuleType:
    """A recipe module of your own, checked for the recipe protocol (see the module doc)."""
    module = importlib.import_module(name)
    api = GENERATOR_API if is_generator(module) else SHARD_RECIPE_API
    missing = [attr for attr in api if not hasattr(module, attr)]
    if missing:
        raise PrepareError(f"{name} is not a recipe: it lacks {', '.join(missing)} (data_recipes/registry.py)")
    return module


def is_generator(module: ModuleType) -> bool:
    return getattr(module, "KIND", "shards") == "generator"
