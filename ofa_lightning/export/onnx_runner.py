"""Decode with the ONNX graphs of ``onnx_graphs.py`` under onnxruntime.

:class:`OnnxOFA` stands in for ``OFAModel`` where the kit's decoding reads one (``config``, ``encode``,
``new_cache``, ``decode``): ``ofa_lightning.generation.generate(OnnxOFA(folder), batch, config, constraint_trie=...)``
runs the kit's own beam search (tries, ranges, prefixes, n-gram blocking, length penalty), with every network
evaluation in onnxruntime. The key/value cache lives in a ``DecoderCache`` (numpy ↔ torch without copies), so beam
reordering is the kit's too. Refused, naming the option: sampling (``strategy=sampling``), image-code decoding
(``gen_code`` / ``code_masks``: text-to-image), text-only inputs (the encoder graph takes images) and
``use_cache=false``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ofa_lightning.errors import UserError
from ofa_lightning.model import OFAConfig
from ofa_lightning.model.outputs import DecoderCache, EncoderOutput

from .onnx_graphs import MANIFEST

__all__ = ["OnnxOFA", "check_generation_config"]


def check_generation_config(config: Any) -> None:
    """Refuse the decoding options the ONNX graphs do not run, naming them."""
    unsupported = []
    if getattr(config, "strategy", "beam") != "beam":
        unsupported.append(f"strategy={config.strategy!r} (sampling)")
    if getattr(config, "gen_code", False):
        unsupported.append("gen_code=true (image-code decoding)")
    if not getattr(config, "use_cache", True):
        unsupported.append("use_cache=false")
    if unsupported:
        raise UserError("the ONNX runner decodes text with beam search only; unsupported: " + ", ".join(unsupported))


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class OnnxOFA:
    """The exported graphs of one model, with the ``OFAModel`` decoding interface (see the module docstring)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        threads: int | None = None,
        providers: list[str] | None = None,
        allow_spinning: bool = False,
    ):
        """``allow_spinning``: onnxruntime's threads busy-wait after each graph run by default. Between runs the
        beam search does its own (torch) work on the same cores, and spinning threads take those cores from it:
        with spinning, a caption's search work outside the graphs took several times longer on 2 cores."""
        import onnxruntime as ort

        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.is_file():
            raise UserError(f"{folder} holds no {MANIFEST}: not written by ofa-export --format onnx")
        self.manifest = json.loads(manifest_path.read_text())
        config = dict(self.manifest["model_config"])
        known = set(OFAConfig.__dataclass_fields__)
        self.config = OFAConfig(**{k: v for k, v in config.items() if k in known})
        self.layers = int(self.manifest["layers"])
        self.image_size = int(self.manifest["image_size"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        providers = providers or ["CPUExecutionProvider"]

        def session(name: str):
            return ort.InferenceSession(str(self.folder / name), options, providers=providers)

        self.encoder = session("encoder.onnx")
        self.first = session("decoder_first.onnx")
        self.step = session("decoder_step.onnx")
        self._first_out = [o.name for o in self.first.get_outputs()]
        self._step_in = [i.name for i in self.step.get_inputs()]

    # ---------------------------------------------------------------------------------------------- encoder
    def encode(
        self,
        input_ids: Tensor,
        patch_images: Tensor | None = None,
        patch_masks: Tensor | None = None,
        sample_patch_num: int | None = None,
    ) -> EncoderOutput:
        if patch_images is None:
            raise UserError("the ONNX encoder graph takes images: text-only inputs are not supported")
        if sample_patch_num:
            raise UserError("the ONNX encoder graph does not sample patches (sample_patch_num)")
        if patch_images.shape[-1] != self.image_size or patch_images.shape[-2] != self.image_size:
            raise UserError(
                f"the ONNX graphs were exported for {self.image_size} px images; got {tuple(patch_images.shape[-2:])}"
            )
        if patch_masks is None:
            patch_masks = torch.ones(input_ids.shape[0], dtype=torch.bool)
        hidden, pad, pos = self.encoder.run(
            None,
            {
                "input_ids": _np(input_ids.long()),
                "patch_images": _np(patch_images.float()),
                "patch_masks": _np(patch_masks.bool()),
            },
        )
        return EncoderOutput(torch.from_numpy(hidden), torch.from_numpy(pad), torch.from_numpy(pos))

    # ---------------------------------------------------------------------------------------------- decoder
    def new_cache(self) -> DecoderCache:
        return DecoderCache()

    def decode(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOutput,
        code_masks: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Logits (R, 1, V) of the last position of ``prev_output_tokens``; fills / extends ``cache``."""
        if code_masks is not None and bool(code_masks.any()):
            raise UserError("the ONNX graphs decode text only: image-code decoding (code_masks) is not supported")
        if cache is None:
            raise UserError("the ONNX runner needs the key/value cache (use_cache=true)")
        n = self.layers
        if cache.length == 0:
            if prev_output_tokens.shape[1] != 1:
                raise UserError("the ONNX runner decodes one token per step from BOS")
            out = self.first.run(
                None,
                {
                    "tokens": _np(prev_output_tokens),
                    "hidden": _np(encoder_out.hidden),
                    "padding_mask": _np(encoder_out.padding_mask),
                    "pos_embed": _np(encoder_out.pos_embed),
                },
            )
            t = [torch.from_numpy(o) for o in out]
            logits, cache.self_pos_k, cache.cross_pos_k, cache.cross_mask = t[:4]
            kv = t[4:]
            cache.self_kv = [(kv[2 * i], kv[2 * i + 1]) for i in range(n)]
            cache.cross_kv = [(kv[2 * n + 2 * i], kv[2 * n + 2 * i + 1]) for i in range(n)]
        else:
            if prev_output_tokens.shape[1] != cache.length + 1:
                raise UserError("the ONNX runner decodes one token per step")
            tensors = [cache.self_pos_k, cache.cross_pos_k, cache.cross_mask]
            tensors += [x for pair in cache.self_kv for x in pair] + [x for pair in cache.cross_kv for x in pair]
            feed = {"tokens": _np(prev_output_tokens)}
            feed.update({name: _np(t) for name, t in zip(self._step_in[1:], tensors)})
            out = [torch.from_numpy(o) for o in self.step.run(None, feed)]
            logits, cache.self_pos_k = out[0], out[1]
            kv = out[2:]
            cache.self_kv = [(kv[2 * i], kv[2 * i + 1]) for i in range(n)]
        cache.length = prev_output_tokens.shape[1]
        return logits[:, None, :]

    def generate(self, batch: Any, config: Any = None, **kwargs: Any) -> list:
        """``ofa_lightning.generation.generate`` over the graphs, after refusing what they do not run."""
        from ofa_lightning.generation import GenerationConfig, generate

        config = config or GenerationConfig()
        check_generation_config(config)
        return generate(self, batch, config, **kwargs)
