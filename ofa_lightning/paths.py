"""Where the kit's Hydra configs live, and the directory relative paths in them start from.

``CONF_DIR``: the configs. In a source checkout (editable install) the repository's top-level ``conf/``; in a
regular install the copy shipped inside the package (``ofa_lightning/conf``, built from ``conf/`` by
pyproject.toml). ``OFA_CONF_DIR`` replaces it.

``LAUNCH_DIR``: the working directory this process started in. ``conf/paths/default.yaml`` roots everything there
(``paths.root_dir: ${oc.env:OFA_ROOT,${ofa.launch_dir:}}``): data under ``./data``, runs under ``./runs``, OFA's BPE
files in ``./ofa_bpe``. The ``ofa.launch_dir`` resolver is registered on import, so it also resolves where Hydra's
own ``${hydra:runtime.cwd}`` does not (a multirun's ``hydra.sweep.dir``, ``compose_config``).

``OFA_CONFIG_PATH``: extra config folders (``os.pathsep``-separated) added to Hydra's config search path, so that
a folder of your own ``mixture/*.yaml`` or ``experiment/*.yaml`` adds to the kit without editing it (the ``ofa-*``
Hydra commands also take Hydra's ``--config-dir DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the source checkout (site-packages in a regular install)
LAUNCH_DIR = Path.cwd().resolve()


def _find_conf_dir() -> Path:
    env = os.environ.get("OFA_CONF_DIR")
    if env:
        return Path(env).expanduser().resolve()
    for candidate in (PACKAGE_DIR / "conf", REPO_ROOT / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    return REPO_ROOT / "conf"


CONF_DIR = _find_conf_dir()


def user_config_dirs() -> list[Path]:
    """The folders named by ``OFA_CONFIG_PATH`` (empty entries skipped), as absolute paths."""
    raw = os.environ.get("OFA_CONFIG_PATH", "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def search_path_override() -> list[str]:
    """A ``hydra.searchpath=[...]`` override for ``OFA_CONFIG_PATH`` (none when it is unset)."""
    dirs = user_config_dirs()
    if not dirs:
        return []
    quoted = ",".join("'file://" + str(d).replace("\\", "\\\\").replace("'", "\\'") + "'" for d in dirs)
    return [f"hydra.searchpath=[{quoted}]"]


DEFERRED_RECORD_PREFIX = "ofa-hydra-"


def deferred_record_dir(output_dir: str) -> str:
    """The temporary folder a resume job's Hydra record (``.hydra/``) is written to until its checkpoint has loaded:
    one per job output dir, the same on every call (Hydra reads ``hydra.output_subdir`` more than once)."""
    import hashlib
    import tempfile

    digest = hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"{DEFERRED_RECORD_PREFIX}{digest}")


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("ofa.launch_dir"):
        OmegaConf.register_new_resolver("ofa.launch_dir", lambda: str(LAUNCH_DIR))
    if not OmegaConf.has_resolver("ofa.deferred_record_dir"):
        OmegaConf.register_new_resolver("ofa.deferred_record_dir", deferred_record_dir)


_register_resolvers()
