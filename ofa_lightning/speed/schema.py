"""The structured schema of the ``model`` config group (Hydra's ConfigStore): every :class:`OFAConfig` field at its
default, the catalogue ``size`` the file describes, and ``speed`` (:class:`SpeedConfig`).

``conf/model/<size>.yaml`` starts from it (``defaults: [ofa_config_schema, _self_]``) and lists only what differs,
so every field can still be overridden on the command line (``model.dropout=0.0``) and a misspelt one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.config import OFAConfig
from .config import SpeedConfig

SCHEMA_NAME = "ofa_config_schema"


@dataclass
class ModelSchema(OFAConfig):
    size: str = "tiny"  # the catalogue entry (OFAConfig.from_name) the file describes
    name: str = "${.size}"
    vocab_size: int | None = None  # null: the tokenizer's size (59,457 for OFA's files)
    speed: SpeedConfig = field(default_factory=SpeedConfig)


def register_model_schema() -> None:
    """Store :class:`ModelSchema` as ``model/ofa_config_schema`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name=SCHEMA_NAME, node=ModelSchema)
