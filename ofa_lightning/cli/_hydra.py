"""What every ``ofa-*`` command shares: the Hydra main, ``OFA_SMOKE``, the config search path, one-line errors.

``hydra_command(config_name, task, prog)`` builds a console entry point around ``task(cfg)``:

* configs come from the kit's ``conf/`` (``ofa_lightning.paths.CONF_DIR``), plus the folders in ``OFA_CONFIG_PATH``
  and Hydra's ``--config-dir DIR``;
* ``key=value`` for a key inside a free-form mapping (``data.task_options.*``, ``mixture.<source>.options.*``, ofa-eval's
  ``overrides``) adds the key when the mapping does not have it yet (Hydra would want ``++key=value``);
* ``OFA_SMOKE=1``: a seconds-long smoke run of the same command (:func:`apply_smoke`), applied after the user's
  overrides;
* a user error (unknown config key, missing file, bad value, :class:`~ofa_lightning.errors.UserError`) prints one
  line, ``<prog>: error: ...``, and exits with status 2; ``OFA_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) shows the
  traceback instead.

Only the standard library is imported at module level: ``--help`` stays fast.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

SMOKE_ENV = "OFA_SMOKE"
DEBUG_ENV = "OFA_DEBUG"

# The smoke run, per root config: dotted key -> value, set after composition wherever the key exists.
SMOKE_TRAIN: dict[str, Any] = {
    "trainer.max_steps": 2,
    "trainer.val_check_interval": 2,
    "trainer.check_val_every_n_epoch": None,
    "trainer.accumulate_grad_batches": 1,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "data.micro_batch_size": 2,
    "data.num_workers": 0,
    "data.persistent_workers": False,
    "data.shuffle_buffer": 16,
    "data.eval.micro_batch_size": 2,
    "data.eval.num_workers": 0,
    "data.eval.max_samples": 2,
    "checkpoint_every_n_steps": 1,
    "tokenizer.max_samples": 500,  # a trained BPE reads this many samples per source
}
# ofa-eval applies these to the training run's config through its ``overrides`` mapping
SMOKE_EVAL_OVERRIDES: dict[str, Any] = {
    "data.micro_batch_size": 2,
    "data.num_workers": 0,
    "data.persistent_workers": False,
    "data.eval.micro_batch_size": 2,
    "data.eval.num_workers": 0,
    "data.eval.max_samples": 2,
}
SMOKE_PREDICT: dict[str, Any] = {"num_samples": 2}  # text-to-image samples to draw and rerank

_FREE_FORM = re.compile(r"^(overrides|data\.task_options|mixture\.[^.=]+\.options)(\.|$)")
# Hydra options that take a value in the next argument
_VALUE_OPTIONS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--shell-completion",
    "-sc",
}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def smoke_enabled() -> bool:
    """``OFA_SMOKE`` is set to something other than empty/0/false/no/off."""
    return _env_true(SMOKE_ENV)


def apply_smoke(cfg, config_name: str, resumed_step: int = 0) -> None:
    """Turn a composed ``train`` / ``eval`` / ``predict`` config into its smoke run, in place: 2 optimizer steps
    (2 more than ``resumed_step`` for a resumed run), micro batches of 2, no loader workers, 2 evaluated samples per
    split, a checkpoint every step, W&B offline. The model, data, tasks and everything else the user chose are
    kept."""
    from omegaconf import OmegaConf, open_dict

    def put(node, key: str, value: Any) -> None:
        parent, _, leaf = key.rpartition(".")
        holder = OmegaConf.select(node, parent) if parent else node
        if holder is not None and OmegaConf.is_dict(holder) and leaf in holder:
            OmegaConf.update(node, key, value)

    with open_dict(cfg):
        if config_name == "train":
            for key, value in SMOKE_TRAIN.items():
                put(cfg, key, value)
            put(cfg, "trainer.max_steps", resumed_step + SMOKE_TRAIN["trainer.max_steps"])
            if OmegaConf.select(cfg, "logger.mode") in ("online", "auto"):
                cfg.logger.mode = "offline"
        elif config_name == "eval":
            overrides = OmegaConf.to_container(cfg.overrides, resolve=False) if cfg.get("overrides") else {}
            cfg.overrides = {**overrides, **SMOKE_EVAL_OVERRIDES}
        elif config_name == "predict":
            for key, value in SMOKE_PREDICT.items():
                put(cfg, key, value)
    if os.environ.get("WANDB_MODE") != "disabled":
        os.environ["WANDB_MODE"] = "offline"
    print(
        f"{SMOKE_ENV}=1: smoke run (2 steps, micro batch 2, 2 eval samples per split, no W&B network)",
        file=sys.stderr,
        flush=True,
    )


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """The command line Hydra gets: free-form keys as ``++key=value``, ``OFA_CONFIG_PATH`` as ``hydra.searchpath``
    (inserted next to the other overrides, which argparse wants contiguous)."""
    from ofa_lightning.paths import search_path_override

    out: list[str] = []
    positional: list[int] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            positional.append(len(out))
            if not arg.startswith(("+", "~")) and "=" in arg and _FREE_FORM.match(arg.split("=", 1)[0]):
                arg = "++" + arg
        out.append(arg)
    user_searchpath = any(out[i].lstrip("+~").startswith("hydra.searchpath") for i in positional)
    extra = [] if user_searchpath else search_path_override()
    at = positional[-1] + 1 if positional else 0
    return out[:at] + extra + out[at:]


def _one_line(text) -> str:
    lines = [part.strip() for part in str(text).splitlines() if part.strip()]
    if any(line.startswith("Original Traceback") for line in lines):  # re-raised from a DataLoader worker
        lines = [lines[0].rstrip("."), lines[-1]]
    return " ".join(lines)


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _all_keys(node, prefix: str = "") -> list[str]:
    from omegaconf import OmegaConf

    keys: list[str] = []
    if not OmegaConf.is_dict(node):
        return keys
    for key in node.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)
        if (
            OmegaConf.is_dict(child)
            and not child._is_missing()
            and not child._is_none()
            and not child._is_interpolation()
        ):
            keys.extend(_all_keys(child, full + "."))
    return keys


def unknown_key_message(exc: BaseException) -> str | None:
    """``unknown config key 'trainer.max_step'; closest valid keys: trainer.max_steps`` for Hydra's failure to
    override a key the config does not have, else None."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    match = re.search(r"Could not override '([^']+)'", str(exc))
    if not match:
        return None
    key = match.group(1)
    cause = next((e for e in _causes(exc) if isinstance(e, (ConfigKeyError, ConfigAttributeError))), None)
    parent = getattr(cause, "parent_node", None)
    candidates: list[str] = []
    if parent is not None:
        candidates = _all_keys(parent._get_root())
    candidates = [c for c in candidates if not c.rsplit(".", 1)[-1].startswith("_")]
    head, _, leaf = key.rpartition(".")
    siblings = [
        c[len(head) + 1 :] for c in candidates if head and c.startswith(head + ".") and "." not in c[len(head) + 1 :]
    ]
    if siblings:  # the parent exists: a similar key beside the typo
        close = [f"{head}.{s}" for s in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
    else:
        close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f"closest valid keys: {', '.join(close)}" if close else "no similar key in the config"
    value = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.split("=", 1)[0] == key), "...")
    return f"unknown config key '{key}'; {hint} (to add a new key write +{key}={value})"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error caused by user input, or None for anything else (a bug: traceback)."""
    from omegaconf.errors import MissingMandatoryValue

    from ofa_lightning.errors import UserError

    try:
        from hydra.errors import HydraException
    except ImportError:  # pragma: no cover - hydra is a dependency
        HydraException = ()  # noqa: N806
    if isinstance(exc, HydraException):
        return unknown_key_message(exc) or _one_line(exc)
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", None) or ""
        return f"missing value for '{key}': give {key}=... on the command line" if key else _one_line(exc)
    if isinstance(exc, (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError)):
        return _one_line(exc)
    from ofa_lightning.errors import disk_full_message

    full = disk_full_message(exc, os.getcwd())  # a full disk met by any layer (checkpoint, log, shard writes)
    if full is not None:
        return _one_line(exc) if "the disk is full" in str(exc) else f"{full}: free some space and run it again"
    return None


_OWN_FULL_ERROR = (
    "OFA_CLI_SET_HYDRA_FULL_ERROR"  # marks a HYDRA_FULL_ERROR=1 that this module set (children inherit it)
)
_DEBUG_AT_START = _env_true(DEBUG_ENV) or (_env_true("HYDRA_FULL_ERROR") and not _env_true(_OWN_FULL_ERROR))


def report_errors(prog: str, entry: Callable[[], Any]) -> Any:
    """Run ``entry``; user errors become ``<prog>: error: <one line>`` on stderr and exit status 2."""
    debug = _DEBUG_AT_START or _env_true(DEBUG_ENV)
    if not _env_true("HYDRA_FULL_ERROR"):  # Hydra re-raises instead of printing: this function reports
        os.environ["HYDRA_FULL_ERROR"] = os.environ[_OWN_FULL_ERROR] = "1"
    try:
        return entry()
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs below
        message = None if debug else user_error_message(exc)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def hydra_command(config_name: str, task: Callable[[Any], Any], prog: str) -> Callable[[], Any]:
    """A console entry point: Hydra main of ``conf/<config_name>.yaml`` around ``task(cfg)``, with the search path,
    smoke mode and error reporting of this module."""

    @functools.wraps(task)
    def task_function(cfg):
        if smoke_enabled():
            apply_smoke(cfg, config_name)
        from ofa_lightning.training.callbacks.console import quiet_known_warnings

        quiet_known_warnings()  # eval and predict build their Trainer without the training callbacks
        # inside the job too: Hydra would print its own "Error executing job" line before re-raising
        return report_errors(prog, lambda: task(cfg))

    if task_function.__module__ == "__main__":  # python -m ofa_lightning.cli.<x>: Hydra names the job by module
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is not None:
            task_function.__module__ = spec.name

    def main() -> Any:
        import hydra

        from ofa_lightning.paths import CONF_DIR
        from ofa_lightning.speed import register_model_schema  # the model group's schema (no torch import)

        register_model_schema()

        sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:])]
        entry = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task_function)
        return report_errors(prog, entry)

    main.__doc__ = task.__doc__
    return main
