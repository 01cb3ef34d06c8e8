"""OFA's tasks: one module per task plus the YAML template task, and a registry.

====================  ==========================================================  ==========================
name                  what                                                        inference
====================  ==========================================================  ==========================
caption               image captioning (COCO; pre-training caption rows)          beam search
vqa                   VQA, ``prev_output`` prompt, confidence weights             all-candidate / beam
grounding             RefCOCO/+/g: text → ``<bin>``×4 (512² squash)               beam, 4 tokens
grounded_caption      region (``<bin>``×4) → text (pre-training)                  beam search
image_text_matching   does the image describe "..."? yes/no (pre-training)        all-candidate
qa_matching           is "a" the answer to "q"? yes/no (pre-training)             all-candidate
detection             all boxes + labels as tokens (pre-training)                 beam search
image_infilling       centre VQGAN codes from the masked image (pre-training)     code sampling
text_infilling        BART span-masked text → text (pre-training)                 beam search
snli_ve               visual entailment yes/no/maybe                              all-candidate
image_classification  ImageNet class name                                         all-candidate / beam
glue                  the seven GLUE prompts, single label token                  last-token argmax
gigaword              summarisation with target-side noise                        beam search
text_to_image         caption → 1024 VQGAN codes                                  code sampling
template              any task declared in YAML (see :mod:`.template`)
====================  ==========================================================  ==========================

``build_task(name, tokenizer, **options)`` builds one (aliases: ``refcoco`` → grounding, ``itm``,
``imagenet``, ``image_gen``, ``vqa_gen``, ``summarization``); ``build_task_from_config(cfg, tokenizer)`` takes a
``conf/task/*.yaml`` mapping (``name`` + options; a DictConfig, a dict, a YAML string or a YAML file path).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import BadSampleError, Example, SkipSample, Task
from .caption import CaptionTask
from .detection import DetectionTask
from .gigaword import GigawordTask
from .glue import GlueTask
from .grounded_caption import GroundedCaptionTask
from .grounding import GroundingTask
from .image_classification import ImageClassificationTask
from .image_infilling import ImageInfillingTask
from .image_text_matching import ImageTextMatchingTask
from .qa_matching import QAMatchingTask
from .snli_ve import SnliVeTask
from .template import TemplateTask
from .text_infilling import TextInfillingTask
from .text_to_image import TextToImageTask
from .vqa import VQATask

__all__ = [
    "TASKS",
    "ALIASES",
    "build_task",
    "build_task_from_config",
    "Task",
    "Example",
    "SkipSample",
    "BadSampleError",
]

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        CaptionTask,
        VQATask,
        GroundingTask,
        GroundedCaptionTask,
        ImageTextMatchingTask,
        QAMatchingTask,
        DetectionTask,
        ImageInfillingTask,
        TextInfillingTask,
        SnliVeTask,
        ImageClassificationTask,
        GlueTask,
        GigawordTask,
        TextToImageTask,
        TemplateTask,
    )
}

#: other names people use for the same tasks (OFA's own task names among them)
ALIASES: dict[str, str] = {
    "refcoco": "grounding",
    "visual_grounding": "grounding",
    "itm": "image_text_matching",
    "imagenet": "image_classification",
    "image_classify": "image_classification",
    "image_gen": "text_to_image",
    "vqa_gen": "vqa",
    "summarization": "gigaword",
}


def _resolve(name: Any) -> type[Task]:
    key = name.strip().lower() if isinstance(name, str) else name
    key = ALIASES.get(key, key)
    if key not in TASKS:
        known = ", ".join(sorted(TASKS))
        aliases = ", ".join(f"{a} ({t})" for a, t in sorted(ALIASES.items()))
        raise ValueError(f"unknown task {name!r}; known tasks: {known}; aliases: {aliases}")
    return TASKS[key]


def build_task(name: str, tokenizer, **options: Any) -> Task:
    """Instantiate a registered task; unknown names raise ``ValueError`` listing the known ones.

    ``build_task("template", tok, config="conf/task/x.yaml", **more)`` reads a YAML-declared task from a file
    (``more`` overrides its keys), so a mixture entry can name one: ``{task: template, options: {config: ...}}``.
    """
    if "config" in options and _resolve(name) is _resolve("template"):
        cfg = _to_dict(options.pop("config"))
        cfg.update(options)
        return build_task_from_config(cfg, tokenizer)
    return _resolve(name)(tokenizer, **options)


def _to_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, (str, os.PathLike)):
        import yaml

        text = os.fspath(cfg)
        if "\n" not in text and os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        cfg = yaml.safe_load(text)
    else:
        try:  # a Hydra/OmegaConf node
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
    if not isinstance(cfg, Mapping):
        raise ValueError(f"task config must be a mapping with a 'name' key, got {type(cfg).__name__}")
    return dict(cfg)


def build_task_from_config(cfg: Any, tokenizer) -> Task:
    """Build a task from its config: ``{"name": <task or alias>, **options}`` (``conf/task/*.yaml``).

    ``name: template`` (or a mapping with ``source`` and ``target`` but no name) builds a
    :class:`~ofa_lightning.tasks.template.TemplateTask`. ``cfg`` may be a dict, an OmegaConf node, a YAML string
    or the path of a YAML file. Keys starting with ``_`` (Hydra's ``_target_`` ...) are ignored.
    """
    options = {k: v for k, v in _to_dict(cfg).items() if not str(k).startswith("_")}
    name = options.pop("name", None)
    if name is None:
        if "source" in options and "target" in options:
            name = "template"
        else:
            raise ValueError(f"task config needs a 'name' (one of: {', '.join(sorted(TASKS))})")
    return build_task(name, tokenizer, **options)
