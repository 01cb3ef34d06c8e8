"""Local stand-ins for what the documented commands download: OFA's BPE files, a released OFA checkpoint, photos.

A docs block marked ``<!-- docs-test: needs: NAME -->`` finds ``NAME``'s stand-in in its working directory:

    ofa_bpe         ./ofa_bpe/ with OFA's GPT-2 BPE files (copied from the shared folder beside the repository)
    ofa_bert_cn     ./ofa_bert_cn/ with OFA-CN's Chinese vocabulary, vocab.txt + dict.txt (copied the same way)
    ofa_checkpoint  ./ofa_tiny.pt: OFA-Tiny with random weights, saved as OFA's fairseq checkpoints are
    photos          ./photos/*.jpg and ./cat.jpg: photographs shipped with scikit-image (skimage.data)
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
OFA_BPE_SOURCE = REPO_ROOT.parent / "shared" / "ofa_bpe"
OFA_BPE_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
OFA_BERT_CN_SOURCE = REPO_ROOT.parent / "shared" / "ofa_bert_cn"
OFA_BERT_CN_FILES = ("vocab.txt", "dict.txt")
# skimage.data colour photographs that ship inside the package (no download).
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea")


class StandInUnavailable(Exception):
    """A stand-in's source is absent on this machine; the docs file is skipped with this reason."""


def fairseq_layout(model) -> dict:
    """What an OFA fairseq checkpoint's ``model`` entry holds for ``model``: our parameter names (they are
    fairseq's), the tied output projection and the buffers fairseq saves (position buckets, version)."""
    copies: dict[tuple, torch.Tensor] = {}  # tied weights (shared embeddings) stay one tensor, as fairseq saves them
    sd = {}
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), tuple(v.shape), v.stride(), v.dtype) if v.numel() else (k,)
        sd[k] = copies.setdefault(key, v.clone()) if key not in copies else copies[key]
    sd["decoder.output_projection.weight"] = sd["decoder.embed_tokens.weight"]
    sd["encoder.token_rp_bucket"] = torch.zeros(3, 3, dtype=torch.long)
    sd["decoder.image_position_idx"] = torch.zeros(5, dtype=torch.long)
    sd["encoder.version"] = torch.tensor([3.0])
    return sd


def save_ofa_checkpoint(path: Path, size: str = "tiny", seed: int = 0) -> Path:
    """An OFA ``size`` model with random weights and OFA's vocabulary (59,457 entries, matching OFA's BPE files),
    saved like OFA's released ``.pt`` files: ``{"args": Namespace(arch=...), "model": ..., ...}``."""
    from ofa_lightning.model import OFAConfig, OFAModel
    from ofa_lightning.model.config import OFA_VOCAB_SIZE

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = OFAModel(OFAConfig.from_name(size, vocab_size=OFA_VOCAB_SIZE))
    args = argparse.Namespace(
        arch=f"ofa_{size}",
        task="refcoco",
        token_bucket_size=model.config.token_bucket_size,
        image_bucket_size=model.config.image_bucket_size,
    )
    torch.save({"args": args, "model": fairseq_layout(model), "optimizer_history": [], "extra_state": {}}, path)
    return path


def _make_ofa_bpe(dest: Path, cache: Path) -> None:
    missing = [n for n in OFA_BPE_FILES if not (OFA_BPE_SOURCE / n).is_file()]
    if missing:
        raise StandInUnavailable(f"OFA's BPE files are absent ({', '.join(missing)} not in {OFA_BPE_SOURCE})")
    (dest / "ofa_bpe").mkdir()
    for name in OFA_BPE_FILES:
        shutil.copyfile(OFA_BPE_SOURCE / name, dest / "ofa_bpe" / name)


def _make_ofa_bert_cn(dest: Path, cache: Path) -> None:
    missing = [n for n in OFA_BERT_CN_FILES if not (OFA_BERT_CN_SOURCE / n).is_file()]
    if missing:
        raise StandInUnavailable(f"OFA-CN's vocabulary is absent ({', '.join(missing)} not in {OFA_BERT_CN_SOURCE})")
    (dest / "ofa_bert_cn").mkdir()
    for name in OFA_BERT_CN_FILES:
        shutil.copyfile(OFA_BERT_CN_SOURCE / name, dest / "ofa_bert_cn" / name)


def _make_ofa_checkpoint(dest: Path, cache: Path) -> None:
    cached = cache / "ofa_tiny.pt"
    if not cached.is_file():
        save_ofa_checkpoint(cache / "ofa_tiny.pt.partial").rename(cached)
    shutil.copyfile(cached, dest / "ofa_tiny.pt")


def _make_photos(dest: Path, cache: Path) -> None:
    try:
        import skimage.data
    except ImportError as exc:  # a dev dependency: an install without it is broken, not a reason to skip
        raise RuntimeError("the photos stand-in needs scikit-image: pip install -e '.[dev]'") from exc
    from PIL import Image

    cached = cache / "photos"
    if not cached.is_dir():
        partial = cache / "photos.partial"
        partial.mkdir(parents=True, exist_ok=True)
        for name in PHOTOS:
            Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(partial / f"{name}.jpg", quality=92)
        partial.rename(cached)
    shutil.copytree(cached, dest / "photos")
    shutil.copyfile(cached / "chelsea.jpg", dest / "cat.jpg")


STAND_INS: dict[str, Callable[[Path, Path], None]] = {
    "ofa_bpe": _make_ofa_bpe,
    "ofa_bert_cn": _make_ofa_bert_cn,
    "ofa_checkpoint": _make_ofa_checkpoint,
    "photos": _make_photos,
}


def make_stand_ins(names, dest: Path, cache: Path) -> None:
    """Create the named stand-ins in ``dest``; expensive ones are built once into ``cache`` and copied."""
    cache.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        STAND_INS[name](dest, cache)
