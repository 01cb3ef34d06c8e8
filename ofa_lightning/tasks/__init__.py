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

Each module registers its task class with ``@register_task`` (:mod:`.registry`), and the class declares what the
kit needs to know: its instruction per language (``prompts``), the shard fields holding its text
(``text_fields``), ``metrics``, decoding settings (``decoding``), ``parse_prediction`` and ``row_score``.
``build_task(name, tokenizer, **options)`` builds one (aliases: ``refcoco`` → grounding, ``itm``, ``imagenet``,
``image_gen``, ``vqa_gen``, ``summarization``); ``build_task_from_config(cfg, tokenizer)`` takes a
``conf/task/*.yaml`` mapping (``name``, optional ``module`` + options; a DictConfig, a dict, a YAML string or a YAML
file path).
"""

from __future__ import annotations

import importlib

from .base import BadSampleError, Example, SkipSample, Task
from .registry import (
    ALIASES,
    TASKS,
    build_task,
    build_task_from_config,
    import_task_module,
    register_task,
    source_text_fields,
    task_class,
    text_fields,
)

#: the kit's task modules (each registers its task on import)
BUILTIN_MODULES = (
    "caption",
    "vqa",
    "grounding",
    "grounded_caption",
    "image_text_matching",
    "qa_matching",
    "detection",
    "image_infilling",
    "text_infilling",
    "snli_ve",
    "image_classification",
    "glue",
    "gigaword",
    "text_to_image",
    "ocr",
    "template",
)
for _module in BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "TASKS",
    "ALIASES",
    "BUILTIN_MODULES",
    "register_task",
    "task_class",
    "build_task",
    "build_task_from_config",
    "import_task_module",
    "text_fields",
    "source_text_fields",
    "Task",
    "Example",
    "SkipSample",
    "BadSampleError",
]
