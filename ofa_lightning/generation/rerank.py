"""Text-to-image decoding: sample N code grids, decode them with the VQ tokenizer, rerank them with CLIP.

OFA (OFA-Sys/OFA ``tasks/mm_tasks/image_gen.py``): 24 independent samples per caption (top-k 256, temperature 1,
exactly w² codes from the
code range), VQGAN-decoded, reranked by CLIP ViT-B/16 image–text cosine similarity; the best is kept.

:class:`ClipReranker` wraps transformers' ``CLIPModel`` — weights from a local folder
(:meth:`ClipReranker.from_pretrained`, never downloaded: ``local_files_only``) or a small random-init model for
tests (:meth:`ClipReranker.random_init`, with a byte-level stand-in tokenizer: its scores mean nothing, it only
exercises the code path). transformers is an optional dependency (``pip install 'ofa-lightning[gen]'``), imported
when a reranker is built. :func:`generate_images` runs the whole pipeline for a batch of prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "ClipReranker",
    "ImageSample",
    "generate_images",
    "code_generation_config",
    "require_transformers",
    "CLIP_MEAN",
    "CLIP_STD",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def require_transformers(what: str = "CLIP reranking"):
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"{what} needs the 'transformers' package: pip install 'ofa-lightning[gen]' (or pip install transformers)"
        ) from exc
    return transformers


def _byte_tokenizer(vocab_size: int, max_length: int) -> Callable[[Sequence[str]], dict[str, Tensor]]:
    """Stand-in tokenizer for random-init models: UTF-8 bytes + BOS/EOS, the EOS being the largest id (CLIP pools
    the text at the position of the largest id)."""
    bos, eos = vocab_size - 2, vocab_size - 1

    def tokenize(texts: Sequence[str]) -> dict[str, Tensor]:
        rows = [[bos] + [b % (vocab_size - 2) for b in t.encode("utf-8")][: max_length - 2] + [eos] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return tokenize


class ClipReranker:
    """Scores images against a caption with a CLIP model (cosine similarity of the projected embeddings)."""

    def __init__(
        self,
        model: Any,
        tokenize: Callable[[Sequence[str]], dict[str, Tensor]],
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        device: str | torch.device = "cpu",
    ):
        self.model = model.to(device).eval()
        self.tokenize = tokenize
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> ClipReranker:
        """transformers CLIP weights + processor files from a local folder (e.g. a saved
        openai/clip-vit-base-patch16)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"CLIP folder not found: {path} (save one with CLIPModel.save_pretrained and "
                "CLIPProcessor.save_pretrained)"
            )
        tf = require_transformers()
        model = tf.CLIPModel.from_pretrained(str(path), local_files_only=True)
        processor = tf.CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        tok = processor.tokenizer
        max_len = int(model.config.text_config.max_position_embeddings)

        def tokenize(texts: Sequence[str]) -> dict[str, Tensor]:
            out = tok(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

        ip = processor.image_processor
        crop = ip.crop_size
        size = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
        return cls(
            model,
            tokenize,
            int(size or model.config.vision_config.image_size),
            ip.image_mean or CLIP_MEAN,
            ip.image_std or CLIP_STD,
            device,
        )

    @classmethod
    def random_init(
        cls, seed: int = 0, image_size: int = 32, device: str | torch.device = "cpu", **overrides: Any
    ) -> ClipReranker:
        """A tiny CLIP at random init (tests; no files). Scores are meaningless."""
        tf = require_transformers()
        text = dict(
            vocab_size=258,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
        vision = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
        )
        text.update(overrides.pop("text_config", {}))
        vision.update(overrides.pop("vision_config", {}))
        config = tf.CLIPConfig(
            text_config=text, vision_config=vision, projection_dim=overrides.pop("projection_dim", 32), **overrides
        )
        torch.manual_seed(seed)
        model = tf.CLIPModel(config)
        return cls(
            model, _byte_tokenizer(text["vocab_size"], text["max_position_embeddings"]), image_size, device=device
        )

    # ------------------------------------------------------------------------------------------------ features
    def pixel_values(self, images: Sequence[Image.Image]) -> Tensor:
        """CLIP preprocessing: shorter side → image_size (bicubic), centre crop, [0, 1], normalise."""
        out = []
        s = self.image_size
        for image in images:
            image = image.convert("RGB")
            w, h = image.size
            scale = s / min(w, h)
            image = image.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BICUBIC)
            w, h = image.size
            left, top = (w - s) // 2, (h - s) // 2
            image = image.crop((left, top, left + s, top + s))
            x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(s, s, 3).permute(2, 0, 1)
            out.append((x.float() / 255 - self.mean) / self.std)
        return torch.stack(out).to(self.device)

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image]) -> Tensor:
        feats = self.model.get_image_features(pixel_values=self.pixel_values(images))
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> Tensor:
        batch = {k: v.to(self.device) for k, v in self.tokenize(list(texts)).items()}
        feats = self.model.get_text_features(**batch)
        return F.normalize(feats.float(), dim=-1)

    def scores(self, images: Sequence[Image.Image], text: str) -> Tensor:
        """Cosine similarity of each image with ``text`` (N,)."""
        if not images:
            return torch.zeros(0)
        return (self.image_features(images) @ self.text_features([text])[0]).cpu()

    def rerank(self, images: Sequence[Image.Image], text: str) -> list[tuple[int, float]]:
        """(index, score) of every image, best first."""
        s = self.scores(images, text)
        order = torch.argsort(s, descending=True, stable=True).tolist()
        return [(i, float(s[i])) for i in order]


@dataclass
class ImageSample:
    image: Image.Image
    codes: list[int]
    score: float  # the model's log-probability score of the sample
    clip_score: float | None = None  # cosine similarity with the caption (when reranked)


def code_generation_config(
    num_codes: int,
    code_range: tuple[int, int],
    *,
    num_samples: int = 24,
    top_k: int = 256,
    top_p: float = -1.0,
    temperature: float = 1.0,
    seed: int | None = 42,
):
    """OFA's text-to-image sampling settings for ``num_codes`` codes from ``code_range`` (OFA's image_gen task)."""
    from .settings import GenerationConfig

    return GenerationConfig.preset(
        "text_to_image",
        beam_size=num_samples,
        sampling_topk=top_k,
        sampling_topp=top_p,
        temperature=temperature,
        min_len=num_codes,
        max_len_b=num_codes,
        constraint_range=tuple(code_range),
        seed=seed,
    )


@torch.no_grad()
def generate_images(
    model: Any,
    input_ids: Tensor,
    vq: Any,
    *,
    code_offset: int,
    captions: Sequence[str] | None = None,
    reranker: ClipReranker | None = None,
    num_samples: int = 24,
    top_k: int = 256,
    top_p: float = -1.0,
    temperature: float = 1.0,
    seed: int | None = 42,
    num_codes: int | None = None,
) -> list[list[ImageSample]]:
    """Per prompt row of ``input_ids``: ``num_samples`` images, best first (CLIP score with ``reranker``, else the
    model's score).

    ``code_offset`` is the id of ``<code_0>``; codes are drawn from ``[code_offset, code_offset + vq.n_embed)`` so that
    every sample decodes. ``num_codes`` defaults to the decoder's window, ``(code_image_size // 8)²``.
    """
    from . import generate

    if reranker is not None and (captions is None or len(captions) != input_ids.size(0)):
        raise ValueError("CLIP reranking needs one caption per prompt")
    if num_codes is None:
        num_codes = (int(model.config.code_image_size) // 8) ** 2
    code_range = (code_offset, code_offset + int(vq.n_embed))
    config = code_generation_config(
        num_codes,
        code_range,
        num_samples=num_samples,
        top_k=min(top_k, vq.n_embed),
        top_p=top_p,
        temperature=temperature,
        seed=seed,
    )
    hyps = generate(model, {"input_ids": input_ids}, config)
    out: list[list[ImageSample]] = []
    for row, row_hyps in enumerate(hyps):
        samples = []
        for hyp in row_hyps:
            codes = [int(t) - code_offset for t in hyp.tokens.tolist() if code_range[0] <= int(t) < code_range[1]]
            if len(codes) != num_codes:
                continue  # cannot happen with min_len = max_len = num_codes; kept as a guard
            samples.append(ImageSample(None, codes, float(hyp.score)))  # type: ignore[arg-type]
        if samples:
            images = vq.decode_to_pil(torch.tensor([s.codes for s in samples]))
            for s, image in zip(samples, images):
                s.image = image
        if reranker is not None and samples:
            ranked = reranker.rerank([s.image for s in samples], captions[row])
            for i, score in ranked:
                samples[i].clip_score = score
            samples = [samples[i] for i, _ in ranked]
        out.append(samples)
    return out
