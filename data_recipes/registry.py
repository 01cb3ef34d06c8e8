"""The recipes `ofa-prepare` knows, in the order `--list` shows them (public datasets, then your own data in
`generic/`, then `inspect`, which reads shards instead of writing them).

A shard recipe module defines NAME, DESCRIPTION, add_arguments(parser), available_splits(args) and
candidates(args, split) (optionally write_extras(args, out_dir)); a generator module (KIND = "generator")
defines run(args) instead.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
    "generic.table",
    "generic.coco_json",
    "generic.class_folders",
    "generic.hf_dataset",
    "inspect_shards",
)


def load_recipes() -> dict[str, ModuleType]:
    modules = [importlib.import_module(f"data_recipes.{name}") for name in RECIPE_MODULES]
    return {module.NAME: module for module in modules}


def is_generator(module: ModuleType) -> bool:
    return getattr(module, "KIND", "shards") == "generator"
