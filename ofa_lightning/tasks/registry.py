"""The task registry: every task class registers itself here with :func:`register_task`, and the rest of the kit
(data pipeline, evaluation, API, tokenizer training, prediction tables) looks tasks up by name here and asks the
task class what it knows. Nothing outside a task's own module lists task names.

``register_task`` also registers the task's decoding settings (``Task.decoding`` under the task's name, and
``Task.decoding_presets``) as generation presets, so ``GenerationConfig.preset("caption")`` and a task config's
``generation: {preset: caption_huge}`` find them.

A task defined outside the kit registers the same way; its task config (``conf/task/*.yaml``) names the Python
module that defines it with ``module:``, and :func:`build_task` / :func:`build_task_from_config` import that module
first.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ofa_lightning.generation.settings import GenerationConfig, register_preset

from .base import Task

__all__ = [
    "TASKS",
    "ALIASES",
    "register_task",
    "task_class",
    "build_task",
    "build_task_from_config",
    "import_task_module",
    "text_fields",
    "source_text_fields",
]

#: registered task classes by name
TASKS: dict[str, type[Task]] = {}
#: other names people use for the same tasks (OFA's own task names among them)
ALIASES: dict[str, str] = {}

T = TypeVar("T", bound=type[Task])


def register_task(cls: T | None = None, *, aliases: Sequence[str] = ()) -> T | Callable[[T], T]:
    """Class decorator: ``@register_task`` or ``@register_task(aliases=("refcoco",))``.

    Registers ``cls`` under ``cls.name`` (a second class with the same name replaces the first: a user's module
    may override a built-in task), its ``aliases``, and its decoding presets."""

    def add(task_cls: T) -> T:
        name = getattr(task_cls, "name", None)
        if not isinstance(name, str) or not name or name == Task.name:
            raise ValueError(f"{task_cls.__name__} needs a class attribute 'name' to be registered")
        TASKS[name] = task_cls
        for alias in aliases:
            ALIASES[str(alias)] = name
        if task_cls.decoding is not None:
            register_preset(name, GenerationConfig(**task_cls.decoding))
        for preset, fields in (task_cls.decoding_presets or {}).items():
            register_preset(preset, GenerationConfig(**fields))
        return task_cls

    return add(cls) if cls is not None else add


def task_class(name: Any) -> type[Task]:
    """The registered class of a task name or alias; unknown names raise ``ValueError`` listing the known ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = ALIASES.get(key, key)
    if key not in TASKS:
        known = ", ".join(sorted(TASKS))
        aliases = ", ".join(f"{a} ({t})" for a, t in sorted(ALIASES.items()))
        raise ValueError(
            f"unknown task {name!r}; known tasks: {known}; aliases: {aliases} (a task of your own: name its module "
            "with `module:` in the task config)"
        )
    return TASKS[key]


def import_task_module(module: str) -> None:
    """Imports a module that registers tasks (``module:`` of a task config); a clear error when it is missing."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise ValueError(
                f"task module {module!r} is not importable ({exc}); put its folder on PYTHONPATH"
            ) from None
        raise


def build_task(name: str, tokenizer, /, **options: Any) -> Task:
    """Instantiate a registered task; unknown names raise ``ValueError`` listing the known ones.

    ``options`` may hold a whole task config (``conf/task/*.yaml``, e.g. composed into a mixture entry's options by
    the mixture's defaults list): its ``module`` is imported first (the Python module that registers the task), and
    its ``name`` must name the same task as ``name``. ``config=<task config file, mapping or YAML text>`` reads
    the options from a task config instead (``options`` win over its keys; its ``name`` wins over ``name``)."""
    if "config" in options:
        cfg = _to_dict(options.pop("config"))
        cfg.update(options)
        cfg.setdefault("name", name)
        return build_task_from_config(cfg, tokenizer)
    module = options.pop("module", None)
    if module:
        import_task_module(str(module))
    declared = options.pop("name", None)
    cls = task_class(name)
    if declared is not None and task_class(declared) is not cls:
        raise ValueError(f"task {name!r} was given the options of task {declared!r}")
    return cls(tokenizer, **options)


def build_task_from_config(cfg: Any, tokenizer) -> Task:
    """Build a task from its config: ``{"name": <task or alias>, "module": <optional>, **options}``.

    ``name: template`` (or a mapping with ``source`` and ``target`` but no name) builds a
    :class:`~ofa_lightning.tasks.template.TemplateTask`. ``module`` is the Python module that registers the task
    (imported first). ``cfg`` may be a dict, an OmegaConf node, a YAML string or the path of a YAML file."""
    options = _to_dict(cfg)
    name = options.pop("name", None)
    module = options.pop("module", None)
    if module:
        import_task_module(str(module))
    if name is None:
        if "source" in options and "target" in options:
            name = "template"
        else:
            raise ValueError(f"task config needs a 'name' (one of: {', '.join(sorted(TASKS))})")
    return task_class(name)(tokenizer, **options)


def source_text_fields(name: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The text fields of a mixture source's task (``task`` + ``options``, whose ``config`` may name the task and
    its module); a task that declares none (the YAML template task) reads those of every registered task."""
    options = dict(options or {})
    if "config" in options:
        options = {**_to_dict(options["config"]), **options}
    if options.get("module"):
        import_task_module(str(options["module"]))
    return task_class(options.get("name") or name).text_fields or text_fields()


def text_fields(names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The shard JSON fields that hold text of the given tasks (all registered tasks when None), in declaration
    order: what a tokenizer is trained on."""
    classes = [task_class(n) for n in names] if names is not None else list(TASKS.values())
    out: dict[str, None] = {}
    for cls in classes:
        out.update(dict.fromkeys(cls.text_fields))
    return tuple(out)


def _to_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, (str, os.PathLike)):
        import yaml

        text = os.fspath(cfg)
        if "\n" not in text and os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        cfg = yaml.safe_load(text)
    else:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"task config must be a mapping with a 'name' key, got {type(cfg).__name__}")
    return dict(cfg)
