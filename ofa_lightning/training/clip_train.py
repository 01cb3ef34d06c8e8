"""Train a small CLIP on image–caption shards: the reward model of the shapes CLIP-SCST demo.

This is not OpenAI's CLIP: no pretrained CLIP can be downloaded here, so text-to-image stage 2
(``training/clip_scst.py``, preset ``text_to_image_shapes_clip_scst``) gets its reward from a tiny transformers
``CLIPModel`` trained from scratch, contrastively (CLIP's symmetric InfoNCE), on the shapes training images and
their captions. It learns what the shapes captions say (colour, shape, background), which is all the demo's reward
needs; it knows nothing else.

The result is a local CLIP folder (``CLIPModel.save_pretrained`` + ``CLIPProcessor.save_pretrained``) that
``generation/rerank.py``'s ``ClipReranker.from_pretrained`` loads, i.e. what ``module.scst.clip_path`` names::

    python -m ofa_lightning.training.clip_train --shards data/shapes/shards/coco_caption --image-size 32 \\
        --vq data/shapes/vq/shapes_small.pt --steps 400 --out data/shapes/clip

The tokenizer is a ``CLIPTokenizerFast`` whose BPE merges spell out every word of the training captions (any
other text falls back to CLIP's byte-level characters), so nothing is downloaded. Images are preprocessed as
``ClipReranker.pixel_values`` does (resized to ``image_size``, CLIP's mean and std). With ``--vq`` it also trains on
the VQ model's reconstructions of the images, the kind of image the reward scores. On the shapes test split, 400
steps tell the colour word of an image apart in 99 % of the images (chance 1/8), colour and shape in ~25 %
(chance 1/48).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ofa_lightning.generation.rerank import CLIP_MEAN, CLIP_STD, ClipReranker, require_transformers

from .vq_train import IMAGE_EXTS, preprocess

__all__ = [
    "load_caption_pairs",
    "build_tokenizer",
    "train_clip",
    "save_clip",
    "image_to_text_accuracy",
    "with_reconstructions",
    "main",
]

log = logging.getLogger(__name__)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WORD = re.compile(r"[a-z]+")


def load_caption_pairs(
    spec: str | list[str], split: str = "train", image_size: int = 32, max_images: int | None = None
) -> tuple[Tensor, list[list[str]]]:
    """Images (N, 3, S, S) in [-1, 1] and each image's captions, from caption shards (the ``coco_caption``
    recipe's: an image plus ``json["captions"]``)."""
    from ofa_lightning.data.shards import iter_tar_samples, resolve_shards

    images: list[Tensor] = []
    captions: list[list[str]] = []
    for url in resolve_shards(spec, split):
        for sample in iter_tar_samples(url):
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            texts = json.loads(sample["json"]).get("captions") if "json" in sample else None
            if ext is None or not texts:
                continue
            with Image.open(io.BytesIO(sample[ext])) as img:
                images.append(preprocess(img, image_size))
            captions.append([str(t) for t in texts])
            if max_images is not None and len(images) >= max_images:
                return torch.stack(images), captions
    if not images:
        raise ValueError(f"no image with captions in {spec!r} (split {split!r})")
    return torch.stack(images), captions


def build_tokenizer(texts: Sequence[str], out_dir: str | Path) -> Any:
    """A ``CLIPTokenizerFast`` with CLIP's byte-level base vocabulary plus BPE merges learnt on the words of
    ``texts`` until each is one token; its vocab.json / merges.txt are written to ``out_dir``."""
    tf = require_transformers("training a CLIP")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    words = [" ".join(WORD.findall(t.lower())) for t in texts]
    learner = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    learner.pre_tokenizer = pre_tokenizers.Whitespace()
    learner.train_from_iterator(
        words, trainers.BpeTrainer(vocab_size=1 << 20, min_frequency=1, end_of_word_suffix="</w>", show_progress=False)
    )
    pairs = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(learner.to_str())["model"]["merges"]
    ]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    seen = set(vocab)
    merges = [f"{a} {b}" for a, b in pairs]
    for a, b in pairs:  # BPE learnt on the words themselves: applying the merges in order rebuilds every word
        if a + b not in seen:
            seen.add(a + b)
            vocab.append(a + b)
    vocab += [BOS, EOS]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tf.CLIPTokenizerFast(vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt"))


def clip_config(tokenizer: Any, image_size: int, width: int = 64, layers: int = 2, patch_size: int = 4) -> Any:
    """A tiny ``CLIPConfig`` (``ClipReranker.random_init``'s shape, wider, with the tokenizer's special ids)."""
    tf = require_transformers("training a CLIP")
    ids = {n: tokenizer.convert_tokens_to_ids(t) for n, t in (("bos", BOS), ("eos", EOS))}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
    )
    vision = dict(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    return tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)


@torch.no_grad()
def with_reconstructions(images: Tensor, captions: list[list[str]], vq: Any) -> tuple[Tensor, list[list[str]]]:
    """``images`` plus the VQ model's reconstructions of them, each under its image's captions: the reward scores
    VQ-decoded samples, blurrier than the originals, and a CLIP trained on originals only tells their colours apart
    less well."""
    vq = vq.eval()
    size = int(images.shape[-1])
    rec = []
    for start in range(0, len(images), 256):
        codes = vq.encode(images[start : start + 256], image_size=size)
        rec.append(vq.decode(codes).float().cpu())
    return torch.cat([images, *rec]), captions + captions


def normalise(images: Tensor) -> Tensor:
    """[-1, 1] images → CLIP's normalised pixel values (as ``ClipReranker.pixel_values``)."""
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def train_clip(
    images: Tensor,
    captions: Sequence[Sequence[str]],
    out_dir: str | Path,
    *,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 64,
    layers: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> ClipReranker:
    """Trains a tiny CLIP on ``images`` ([-1, 1], square) and their captions (one drawn at random per image and
    step), saves it to ``out_dir`` as a local CLIP folder and returns it loaded as a ``ClipReranker``."""
    from tqdm.auto import tqdm

    tf = require_transformers("training a CLIP")
    out = Path(out_dir)
    size = int(images.shape[-1])
    tokenizer = build_tokenizer([t for texts in captions for t in texts], out)
    torch.manual_seed(seed)
    model = tf.CLIPModel(clip_config(tokenizer, size, width, layers))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    pixels = normalise(images)
    model.train()
    bar = tqdm(range(steps), desc="clip", disable=not progress, mininterval=2.0)
    for _ in bar:
        idx = torch.randperm(len(pixels), generator=generator)[:batch_size]
        picks = torch.randint(0, 1 << 30, (len(idx),), generator=generator)
        texts = [captions[i][p % len(captions[i])] for i, p in zip(idx.tolist(), picks.tolist())]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        outputs = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=pixels[idx],
            return_loss=True,
        )
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: a temperature of at least 1/100
        bar.set_postfix(loss=f"{float(outputs.loss.detach()):.3f}", refresh=False)
    model.eval()
    save_clip(model, tokenizer, size, out)
    return ClipReranker.from_pretrained(out)


def save_clip(model: Any, tokenizer: Any, image_size: int, out_dir: str | Path) -> Path:
    """``model`` + a ``CLIPProcessor`` (``tokenizer``, CLIP's image preprocessing at ``image_size``) → ``out_dir``."""
    tf = require_transformers("saving a CLIP")
    out = Path(out_dir)
    processor = tf.CLIPProcessor(
        image_processor=tf.CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        ),
        tokenizer=tokenizer,
    )
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


@torch.no_grad()
def image_to_text_accuracy(
    clip: ClipReranker, images: Sequence[Image.Image], texts: Sequence[str], targets: Sequence[int]
) -> float:
    """Share of ``images`` whose most similar text among ``texts`` is ``texts[targets[i]]`` (zero-shot retrieval)."""
    text = clip.text_features(list(texts))
    hits = 0
    for start in range(0, len(images), 256):
        best = (clip.image_features(list(images[start : start + 256])) @ text.T).argmax(1)
        hits += int((best == torch.tensor(list(targets[start : start + 256]))).sum())
    return hits / max(len(images), 1)


def to_pil(images: Tensor) -> list[Image.Image]:
    """[-1, 1] images (N, 3, S, S) → PIL RGB images."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in x]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="caption shards (the coco_caption recipe's output)")
    parser.add_argument("--out", required=True, help="the CLIP folder to write (module.scst.clip_path)")
    parser.add_argument("--image-size", type=int, default=32, help="the generated images' size (the VQ input)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vq", default=None, help="a VQ checkpoint: also train on its reconstructions (recommended)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, captions = load_caption_pairs(args.shards, "train", args.image_size, args.max_images)
    if args.vq:
        from ofa_lightning.vq import VQModel

        images, captions = with_reconstructions(images, captions, VQModel.load(args.vq))
    clip = train_clip(
        images, captions, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    try:
        held, held_caps = load_caption_pairs(args.shards, "test", args.image_size, 1000)
    except ValueError:
        held, held_caps = images[:1000], captions[:1000]
    texts = [c[0] for c in held_caps]
    accuracy = image_to_text_accuracy(clip, to_pil(held), texts, range(len(texts)))
    log.info("CLIP written to %s; held-out image->text top-1 over %d captions: %.3f", args.out, len(texts), accuracy)


if __name__ == "__main__":  # pragma: no cover
    main()
