"""Kit checkpoints as safetensors: the model's tensors (no pickle) with its config and model card as JSON metadata.

``OFA.load`` reads them without ``trust_checkpoint`` (nothing in the file can run code). The tied embedding is
stored once (``safetensors.torch.save_model`` drops shared copies and ``load_model`` restores the tie).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "save_safetensors_checkpoint", "load_safetensors_checkpoint", "is_safetensors_checkpoint"]

FORMAT = "ofa-lightning-safetensors"


def save_safetensors_checkpoint(model: Any, path: str | Path, card: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (an ``OFAModel``) and its model card (``training/model_card.py``'s dict) to ``path``."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "ofa_format": FORMAT, "model_config": json.dumps(asdict(model.config))}
    if card:
        metadata["model_card"] = json.dumps(card)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def is_safetensors_checkpoint(path: str | Path) -> bool:
    return Path(path).suffix == ".safetensors"


def load_safetensors_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any] | None]:
    """``(OFAModel, model card dict or None)`` of a file written by :func:`save_safetensors_checkpoint`."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    from ofa_lightning.errors import UserError
    from ofa_lightning.model import OFAConfig, OFAModel

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("ofa_format") != FORMAT:
        raise UserError(
            f"{path} is a safetensors file but not an ofa-export checkpoint (no ofa_format metadata); an HF/ModelScope "
            "export folder loads with ofa-convert or OFA.load(<folder>/model.safetensors's folder) instead"
        )
    model = OFAModel(OFAConfig.from_saved(json.loads(metadata["model_config"])))
    missing, unexpected = load_model(model, str(path), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # frozen BatchNorm keeps no counter
    if missing or unexpected:
        raise UserError(
            f"{path} does not match its recorded config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    card = json.loads(metadata["model_card"]) if "model_card" in metadata else None
    return model, card
