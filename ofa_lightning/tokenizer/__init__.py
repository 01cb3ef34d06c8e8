"""OFA's tokenizers: one vocabulary layout (control tokens, text, ``<mask>``, image codes, location bins) around a
text model, OFA's English GPT-2 BPE or OFA-CN's Chinese WordPiece.

* :mod:`~ofa_lightning.tokenizer.vocabulary`: the special tokens, the id blocks and the literal-token rule;
* :mod:`~ofa_lightning.tokenizer.sources`: vocabulary file readers and the cached download of a remote folder;
* :mod:`~ofa_lightning.tokenizer.byte_bpe`, :mod:`~ofa_lightning.tokenizer.bpe_training`: OFA's English BPE, and a
  small BPE trained on a mixture's text;
* :mod:`~ofa_lightning.tokenizer.wordpiece`: OFA-CN's BERT WordPiece;
* :mod:`~ofa_lightning.tokenizer.ofa_tokenizer`: :class:`OFATokenizer`, the text model inside the layout;
* :mod:`~ofa_lightning.tokenizer.geometry`: boxes as location bins and back.
"""

from ofa_lightning.tokenizer.geometry import bins_to_box, box_to_bins, box_to_tokens, tokens_to_box
from ofa_lightning.tokenizer.ofa_tokenizer import MANIFEST_NAME, OFATokenizer
from ofa_lightning.tokenizer.vocabulary import (
    BOS_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    UNK_TOKEN,
)

__all__ = [
    "OFATokenizer",
    "MANIFEST_NAME",
    "box_to_bins",
    "bins_to_box",
    "box_to_tokens",
    "tokens_to_box",
    "BOS_TOKEN",
    "PAD_TOKEN",
    "EOS_TOKEN",
    "UNK_TOKEN",
    "MASK_TOKEN",
]
