"""Training a small byte-level BPE (the demo vocabulary) with ``tokenizers``' ``BpeTrainer``."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from ofa_lightning.tokenizer.byte_bpe import ByteLevelBPE
from ofa_lightning.tokenizer.vocabulary import NUM_CONTROL


def train_byte_level_bpe(texts: Iterable[str], bpe_vocab_size: int = 1000, min_frequency: int = 2) -> ByteLevelBPE:
    """A byte-level BPE trained on ``texts``, its tokens numbered from 4 (OFA's layout).

    ``bpe_vocab_size`` counts the BPE entries only (256 byte symbols + merges; the trainer may stop early when no
    pair reaches ``min_frequency``).
    """
    if bpe_vocab_size < 256:
        raise ValueError(f"bpe_vocab_size must be >= 256 (the byte alphabet), got {bpe_vocab_size}")
    tok = Tokenizer(models.BPE(fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("tokenizers returned a non-contiguous trained vocabulary")
    return ByteLevelBPE({t: NUM_CONTROL + i for t, i in vocab.items()}, merges, len(vocab))
