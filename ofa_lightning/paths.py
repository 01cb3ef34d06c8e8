"""Where the kit's Hydra configs live (the repository's ``conf/``; ``OFA_CONF_DIR`` overrides)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(os.environ.get("OFA_CONF_DIR", REPO_ROOT / "conf"))
