"""OFA-CN's text model: BERT's Chinese WordPiece mapped onto OFA-CN's fairseq dictionary.

OFA-CN (``bpe=bert``, OFA-Sys/OFA ``utils/BERT_CN_dict/``) tokenises text with BERT's basic + WordPiece tokenizer
over ``vocab.txt`` (lower-cased, accents stripped, every CJK character its own word: fairseq's ``BertBPE``), joins the
pieces with spaces and looks each one up in ``dict.txt``: a piece's id is 4 + its dict line, and a piece the
dictionary lacks is ``<unk>``. The WordPiece runs in the ``tokenizers`` library (``BertNormalizer``,
``BertPreTokenizer``, ``WordPiece``); this module maps its ids to the dictionary's.

Three folder layouts are read:

* OFA's: ``vocab.txt`` + ``dict.txt`` (ids from ``dict.txt``);
* ModelScope's: a ``vocab.txt`` whose first lines are ``<s> <pad> </s> <unk>`` (ids are line numbers; a trailing
  ``<mask>`` line is the mask), as ModelScope's Chinese OFA models ship it;
* a plain BERT ``vocab.txt`` (ids 4 + line number).
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from ofa_lightning.tokenizer.sources import read_fairseq_dict, read_wordpiece_vocab
from ofa_lightning.tokenizer.vocabulary import CONTROL_TOKENS, MASK_TOKEN, NUM_CONTROL, UNK_ID

WORDPIECE_FILES = ("vocab.txt", "dict.txt")
WORDPIECE_UNK = "[UNK]"

# Characters written without spaces around them (CJK ideographs, CJK punctuation, full-width forms, kana,
# hangul): the spaces WordPiece decoding puts between pieces are dropped next to them.
_CJK = "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CJK_SPACE_RE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


class BertWordPiece:
    """WordPiece text model over ``tokens`` (the WordPiece vocabulary, in vocab.txt order) whose pieces carry the
    ids of ``symbols`` (the fairseq dictionary, ids 4 + position)."""

    kind = "wordpiece"
    language = "zh"
    space_after_literal = True

    def __init__(self, tokens: list[str], symbols: list[str], lowercase: bool = True) -> None:
        if WORDPIECE_UNK not in tokens:
            raise ValueError(f"the WordPiece vocabulary has no {WORDPIECE_UNK} token")
        self.tokens = list(tokens)
        self.symbols = list(symbols)
        self.lowercase = bool(lowercase)
        self.num_text = len(symbols)
        self._symbol_to_id = {s: NUM_CONTROL + i for i, s in enumerate(symbols)}
        internal = {t: i for i, t in enumerate(tokens)}  # a repeated token keeps its last line, as BERT reads it
        self._internal_to_id = [self._symbol_to_id.get(t, UNK_ID) for t in tokens]
        tok = Tokenizer(models.WordPiece(internal, unk_token=WORDPIECE_UNK, max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=self.lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tok = tok
        self._decoder = decoders.WordPiece(prefix="##", cleanup=True)

    # -- files ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, directory: Path) -> BertWordPiece:
        """OFA's (vocab.txt + dict.txt), ModelScope's or a plain BERT folder (see the module docstring)."""
        vocab_path = directory / "vocab.txt"
        if not vocab_path.is_file():
            raise FileNotFoundError(f"expected vocab.txt at {vocab_path} (a BERT WordPiece vocabulary)")
        tokens = read_wordpiece_vocab(vocab_path)
        if (directory / "dict.txt").is_file():
            return cls(tokens, read_fairseq_dict(directory / "dict.txt"))
        if tuple(tokens[:NUM_CONTROL]) == CONTROL_TOKENS:  # ModelScope: ids are line numbers
            text = tokens[NUM_CONTROL:]
            if text and text[-1] == MASK_TOKEN:
                text = text[:-1]
            if MASK_TOKEN in text:
                raise ValueError(f"{vocab_path}: {MASK_TOKEN} must be the last line, right after the text tokens")
            return cls(text, text)
        return cls(tokens, tokens)

    def save_files(self, directory: Path, mask_id: int) -> dict:
        """Write OFA's layout, ``vocab.txt`` + ``dict.txt``; returns the manifest fields."""
        with open(directory / "vocab.txt", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(t + "\n" for t in self.tokens)
        with open(directory / "dict.txt", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{s} 1\n" for s in self.symbols)
        return {"vocab_file": "vocab.txt", "dict_file": "dict.txt", "lowercase": self.lowercase}

    @classmethod
    def load_files(cls, directory: Path, manifest: dict) -> BertWordPiece:
        if manifest.get("vocab_file") != "vocab.txt" or manifest.get("dict_file") != "dict.txt":
            raise ValueError(
                f"{directory}: unexpected file names {manifest.get('vocab_file')!r}, {manifest.get('dict_file')!r}"
            )
        tokens = read_wordpiece_vocab(directory / "vocab.txt")
        symbols = read_fairseq_dict(directory / "dict.txt")
        return cls(tokens, symbols, lowercase=bool(manifest.get("lowercase", True)))

    # -- text <-> ids --------------------------------------------------------------------------------------------
    def encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        if not pieces:
            return []
        table = self._internal_to_id
        encoded = self._tok.encode_batch(pieces, add_special_tokens=False)
        return [[table[i] for i in e.ids] for e in encoded]

    def is_decodable(self, idx: int) -> bool:
        return NUM_CONTROL <= idx < NUM_CONTROL + self.num_text

    def decode_run(self, ids: list[int]) -> str:
        """Pieces joined as BERT joins them (``##`` continuations glued), without spaces next to CJK text."""
        text = self._decoder.decode([self.symbols[i - NUM_CONTROL] for i in ids])
        return _CJK_SPACE_RE.sub("", text)

    def symbol(self, idx: int) -> str:
        return self.symbols[idx - NUM_CONTROL]

    def index(self, token: str) -> int | None:
        return self._symbol_to_id.get(token)
