"""Reference helpers: ModelScope's port of OFA, built for parity tests.

ModelScope's ``modelscope.models`` package ``__init__`` pulls in a large tree of
optional dependencies (``addict``, fairseq for speech/ViT, ...).  The OFA model
and its fairseq-style ``SequenceGenerator`` need none of them, so this module
loads exactly those source files: when the normal import fails it registers
empty *namespace* parents (``modelscope.models``, ``...multi_modal``,
``...multi_modal.ofa``) that point at the real directories, so the submodules
load from disk without running the heavy ``__init__`` files, and it registers a
tiny ``fairseq.modules.LayerNorm`` stand-in (only ModelScope's ViT option uses
fairseq; OFA-ResNet models never touch it).  Nothing is installed.
After that fallback ``modelscope.models`` is a bare namespace in this process:
import other ModelScope OFA files by their full module path (e.g.
``modelscope.models.multi_modal.ofa.tokenization_ofa``), not via package
attributes.

Public helpers (also used by the model parity tests):

* ``build_ms_model(size_kwargs, seed) -> (ms_model, ms_config)``
* ``ms_sequence_generator(**kw)`` -> ModelScope ``SequenceGenerator``
* ``ms_search_sampling(**kw)`` -> ModelScope ``search.Sampling``
* ``ms_trie(sequences, eos)`` -> ModelScope ``Trie`` (sequences get BOS prepended)
* ``StandInTokenizer`` – the few tokenizer attributes the generator reads
* ``TINY_SIZE`` – the tiny OFA settings used in parity tests
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterable, Sequence
from typing import Any

import torch

OFA_PKG = "modelscope.models.multi_modal.ofa"

# Tiny OFA (OFA's ofa_tiny_architecture) with dropout off, in ModelScope's OFAConfig field names.
TINY_SIZE: dict[str, Any] = dict(
    vocab_size=59457,
    d_model=256,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=1024,
    decoder_ffn_dim=1024,
    resnet_type="resnet50",
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
)


def _register_namespace(name: str, path: str) -> None:
    if name in sys.modules:
        return
    module = types.ModuleType(name)
    module.__path__ = [path]  # type: ignore[attr-defined]
    module.__package__ = name
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def _register_fairseq_standin() -> None:
    try:
        import fairseq  # noqa: F401

        return
    except ImportError:
        pass
    fairseq = types.ModuleType("fairseq")
    fairseq.__path__ = []  # type: ignore[attr-defined]
    modules = types.ModuleType("fairseq.modules")
    modules.LayerNorm = torch.nn.LayerNorm  # type: ignore[attr-defined]
    fairseq.modules = modules  # type: ignore[attr-defined]
    sys.modules["fairseq"] = fairseq
    sys.modules["fairseq.modules"] = modules


def load_ms_ofa() -> types.SimpleNamespace:
    """Import ModelScope's OFA modelling + generation modules (minimal path)."""
    try:
        modeling = importlib.import_module(f"{OFA_PKG}.modeling_ofa")
    except Exception:  # missing optional deps of modelscope's package __init__ files
        import modelscope

        for name in list(sys.modules):  # drop half-imported leftovers
            if name.startswith("modelscope.models") and sys.modules[name] is None:
                del sys.modules[name]
        root = os.path.dirname(modelscope.__file__)
        _register_namespace("modelscope.models", os.path.join(root, "models"))
        _register_namespace("modelscope.models.multi_modal", os.path.join(root, "models", "multi_modal"))
        _register_namespace(OFA_PKG, os.path.join(root, "models", "multi_modal", "ofa"))
        _register_fairseq_standin()
        modeling = importlib.import_module(f"{OFA_PKG}.modeling_ofa")
    configuration = importlib.import_module(f"{OFA_PKG}.configuration_ofa")
    sequence_generator = importlib.import_module(f"{OFA_PKG}.generate.sequence_generator")
    search = importlib.import_module(f"{OFA_PKG}.generate.search")
    return types.SimpleNamespace(
        modeling=modeling,
        configuration=configuration,
        sequence_generator=sequence_generator,
        search=search,
        OFAModel=modeling.OFAModel,
        OFAConfig=configuration.OFAConfig,
        SequenceGenerator=sequence_generator.SequenceGenerator,
    )


def build_ms_model(size_kwargs: dict[str, Any] | None = None, seed: int = 0):
    """ModelScope ``OFAModel`` with random (BERT-style) init under ``seed``, in eval mode.

    ``size_kwargs`` are ModelScope ``OFAConfig`` fields (defaults: ``TINY_SIZE``).
    Returns ``(ms_model, ms_config)``.
    """
    ms = load_ms_ofa()
    kwargs = dict(TINY_SIZE)
    kwargs.update(size_kwargs or {})
    config = ms.OFAConfig(**kwargs)
    torch.manual_seed(seed)
    model = ms.OFAModel(config)
    model.eval()
    return model, config


def perturbed_reference(size_kwargs: dict[str, Any] | None = None, seed: int = 0):
    """``build_ms_model`` with every float tensor moved away from its init (running variances scaled up, the rest
    shifted by N(0, 0.05)), so that parity tests cannot pass on symmetric or zero initial values. Eval mode."""
    ms, _ = build_ms_model(size_kwargs, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in list(ms.named_parameters()) + list(ms.named_buffers()):
            if not t.is_floating_point():
                continue
            if "running_var" in name:
                t.mul_(1 + 0.5 * torch.rand(t.shape, generator=gen))
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=gen))
    return ms.eval()


class StandInTokenizer:
    """Just what ModelScope's SequenceGenerator / Search read from a tokenizer."""

    def __init__(self, vocab_size: int = 59457, pad: int = 1, unk: int = 3, bos: int = 0, eos: int = 2):
        self._vocab = {f"<t{i}>": i for i in range(vocab_size)}
        self.pad_token_id = pad
        self.unk_token_id = unk
        self.bos_token_id = bos
        self.eos_token_id = eos

    def get_vocab(self) -> dict[str, int]:
        return self._vocab

    def get_added_vocab(self) -> dict[str, int]:
        return {}


_TOKENIZERS: dict[int, StandInTokenizer] = {}


def standin_tokenizer(vocab_size: int = 59457) -> StandInTokenizer:
    if vocab_size not in _TOKENIZERS:
        _TOKENIZERS[vocab_size] = StandInTokenizer(vocab_size)
    return _TOKENIZERS[vocab_size]


def ms_sequence_generator(vocab_size: int = 59457, **kw):
    """ModelScope ``SequenceGenerator`` with a stand-in tokenizer; ``kw`` are its arguments."""
    ms = load_ms_ofa()
    tokenizer = kw.pop("tokenizer", None) or standin_tokenizer(vocab_size)
    return ms.SequenceGenerator(tokenizer=tokenizer, **kw)


def ms_search_sampling(vocab_size: int = 59457, **kw):
    """ModelScope ``search.Sampling`` (``sampling_topk`` / ``sampling_topp``)."""
    ms = load_ms_ofa()
    return ms.search.Sampling(standin_tokenizer(vocab_size), **kw)


def ms_trie(sequences: Iterable[Sequence[int]], bos: int = 0, eos: int = 2):
    """ModelScope's constraint ``Trie`` over ``[bos] + seq`` for each sequence (seq ends with EOS)."""
    from modelscope.utils.trie import Trie

    trie = Trie(eos)
    for seq in sequences:
        trie.insert([bos] + [int(t) for t in seq])
    return trie


def ms_generate(generator, ms_model, input_ids, patch_images=None, patch_masks=None, prefix_tokens=None):
    """Run a ModelScope generator on one batch; returns its ``finalized`` lists."""
    net_input: dict[str, Any] = {"input_ids": input_ids}
    if patch_images is not None:
        net_input["patch_images"] = patch_images
    if patch_masks is not None:
        net_input["patch_masks"] = patch_masks
    with torch.no_grad():
        return generator.generate([ms_model], {"net_input": net_input}, prefix_tokens=prefix_tokens)
