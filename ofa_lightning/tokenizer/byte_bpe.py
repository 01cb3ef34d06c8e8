"""OFA's English text model: GPT-2 byte-level BPE mapped onto OFA's fairseq dictionary.

Why the ids must equal fairseq's: OFA's released weights (embedding matrix and output projection) are indexed by
*fairseq dictionary indices*, not GPT-2 BPE ids. OFA encodes text with GPT-2 BPE, writes each GPT-2 id as a string,
and looks that string up in ``dict.txt`` (absent -> ``<unk>``). Any other numbering would silently scramble the
embeddings of converted checkpoints, so this module reproduces that mapping exactly (tests check it id-for-id
against an independent tiktoken implementation). For OFA's files (T=50,260 text symbols) ``<mask>`` is 50264,
``<code_0>`` 50265, ``<bin_0>`` 58457 and there are 59,457 ids in total.

The BPE itself runs in the ``tokenizers`` library; this module maps its internal ids to the final (fairseq) indices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from ofa_lightning.tokenizer.sources import read_fairseq_dict, read_json_vocab, read_merges, require
from ofa_lightning.tokenizer.vocabulary import (
    BIN_OR_CODE_TOKEN_RE,
    CONTROL_TOKENS,
    MASK_TOKEN,
    NUM_CONTROL,
    UNK_ID,
)

# OFA-style files (GPT-2 BPE + fairseq dictionary) and HF/BART-style files (ids already fairseq indices).
OFA_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
HF_FILES = ("vocab.json", "merges.txt")


def byte_level_alphabet() -> list[str]:
    """GPT-2's bytes_to_unicode table: every byte gets a printable unicode character."""
    return sorted(pre_tokenizers.ByteLevel.alphabet())


class ByteLevelBPE:
    """Byte-level BPE text model whose tokens carry fairseq indices in ``[4, 4 + num_text)``."""

    kind = "byte_level_bpe"
    language = "en"
    space_after_literal = False  # BPE text keeps its own leading space ("Ġperson")

    def __init__(
        self,
        token_to_index: dict[str, int],
        merges: Sequence[tuple[str, str]],
        num_text: int,
        raw_symbols: dict[int, str] | None = None,
    ) -> None:
        """
        Args:
            token_to_index: byte-level BPE token string -> final index in ``[4, 4 + num_text)``. BPE tokens that
                the merges can produce but that are missing here encode to ``<unk>`` (OFA: GPT-2 id not in dict.txt).
            merges: BPE merges in priority order.
            num_text: number of text symbols T (indices 4..4+T-1).
            raw_symbols: text indices that are not BPE tokens (e.g. fairseq's ``madeupword0000``); they are
                never produced by encoding and are decoded as the symbol itself.
        """
        raw_symbols = dict(raw_symbols or {})
        hi = NUM_CONTROL + num_text
        # Every text index must be covered exactly once, by a BPE token or a raw symbol.
        owner: dict[int, str] = {}
        for tok, idx in token_to_index.items():
            if not isinstance(idx, int) or not NUM_CONTROL <= idx < hi:
                raise ValueError(f"BPE token {tok!r} has index {idx!r}, outside the text range [4, {hi})")
            if idx in owner:
                raise ValueError(f"index {idx} is assigned to both {owner[idx]!r} and {tok!r}")
            owner[idx] = tok
        for idx, sym in raw_symbols.items():
            if not isinstance(idx, int) or not NUM_CONTROL <= idx < hi:
                raise ValueError(f"symbol {sym!r} has index {idx!r}, outside the text range [4, {hi})")
            if idx in owner:
                raise ValueError(f"index {idx} is assigned to both {owner[idx]!r} and {sym!r}")
            owner[idx] = sym
        if len(owner) != num_text:
            missing = sorted(set(range(NUM_CONTROL, hi)) - set(owner))
            raise ValueError(
                f"{len(missing)} text indices have no token (first: {missing[:5]}); ids must be contiguous from 4"
            )

        # Internal vocabulary for the tokenizers BPE model: byte alphabet + indexed tokens + every merge
        # operand/result (tokenizers requires all of them to exist). Internal ids are arbitrary; only the
        # merges' order sets BPE priorities. internal_to_id maps them to final indices (unk when unindexed).
        internal: dict[str, int] = {}

        def _add(t: str) -> None:
            if t not in internal:
                internal[t] = len(internal)

        for t in byte_level_alphabet():
            _add(t)
        for t in token_to_index:
            _add(t)
        merges = [(str(a), str(b)) for a, b in merges]
        for a, b in merges:
            _add(a)
            _add(b)
            _add(a + b)
        self.num_text = num_text
        self.merges = merges
        self.token_to_index = dict(token_to_index)
        self.raw_symbols = raw_symbols
        self._internal_to_id = [UNK_ID] * len(internal)
        for t, i in internal.items():
            self._internal_to_id[i] = token_to_index.get(t, UNK_ID)
        self._id_to_internal = {token_to_index[t]: i for t, i in internal.items() if t in token_to_index}
        self._index_to_text = dict(owner)
        self._raw_symbol_to_index = {sym: idx for idx, sym in raw_symbols.items()}

        tok = Tokenizer(models.BPE(vocab=internal, merges=merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok

    # -- files ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_ofa_layout(cls, directory: Path) -> ByteLevelBPE:
        """``encoder.json`` + ``vocab.bpe`` + ``dict.txt`` (OFA/fairseq: GPT-2 BPE id -> dict.txt line index + 4)."""
        enc_path, bpe_path, dict_path = require(directory, OFA_FILES, "OFA")
        encoder = read_json_vocab(enc_path)  # GPT-2 token string -> GPT-2 id
        merges = read_merges(bpe_path)
        symbols = read_fairseq_dict(dict_path)
        gpt2_token = {i: t for t, i in encoder.items()}
        # fairseq looks up str(gpt2_id) in dict.txt; a symbol that is no GPT-2 id (madeupword...) is a raw symbol.
        token_to_index: dict[str, int] = {}
        raw: dict[int, str] = {}
        for line_no, sym in enumerate(symbols):
            idx = NUM_CONTROL + line_no
            if sym.isascii() and sym.isdigit() and str(int(sym)) == sym and int(sym) in gpt2_token:
                token_to_index[gpt2_token[int(sym)]] = idx
            else:
                raw[idx] = sym
        return cls(token_to_index, merges, len(symbols), raw_symbols=raw)

    @classmethod
    def from_hf_layout(cls, directory: Path, raw_symbols: dict[int, str] | None = None) -> ByteLevelBPE:
        """``vocab.json`` + ``merges.txt`` whose ids already are fairseq indices (BART/HF style: ``<s>``..``<unk>``
        at 0..3, text tokens contiguous from 4, optional ``<mask>`` right after them)."""
        vocab_path, merges_path = require(directory, HF_FILES, "HF/BART")
        vocab = read_json_vocab(vocab_path)
        merges = read_merges(merges_path)
        raw_symbols = dict(raw_symbols or {})
        text: dict[str, int] = {}
        specials: dict[str, int] = {}
        for tok, idx in vocab.items():
            if tok in CONTROL_TOKENS or tok == MASK_TOKEN:
                specials[tok] = idx
            elif BIN_OR_CODE_TOKEN_RE.match(tok):
                continue  # sizes come from num_codes/num_bins, positions from the layout
            else:
                text[tok] = idx
        for want, tok in enumerate(CONTROL_TOKENS):
            if tok in specials and specials[tok] != want:
                raise ValueError(
                    f"{vocab_path}: {tok} has id {specials[tok]}, expected {want} "
                    "(ids must be fairseq indices: <s>=0, <pad>=1, </s>=2, <unk>=3)"
                )
        num_text = len(text) + len(raw_symbols)
        lo = min(list(text.values()) + list(raw_symbols), default=NUM_CONTROL)
        if lo != NUM_CONTROL:
            raise ValueError(
                f"{vocab_path}: text token ids start at {lo}, expected 4. This loader needs ids that already equal "
                "fairseq indices (BART style); for a plain GPT-2 vocabulary use encoder.json + vocab.bpe + dict.txt"
            )
        if MASK_TOKEN in specials and specials[MASK_TOKEN] != NUM_CONTROL + num_text:
            raise ValueError(
                f"{vocab_path}: {MASK_TOKEN} has id {specials[MASK_TOKEN]}, expected {NUM_CONTROL + num_text} "
                "(right after the text tokens)"
            )
        return cls(text, merges, num_text, raw_symbols=raw_symbols)

    def save_files(self, directory: Path, mask_id: int) -> dict:
        """Write ``vocab.json`` + ``merges.txt`` (BART style, ids = final indices); returns the manifest fields."""
        vocab: dict[str, int] = {t: i for i, t in enumerate(CONTROL_TOKENS)}
        vocab.update(self.token_to_index)
        extra_raw: dict[int, str] = {}
        for idx, sym in self.raw_symbols.items():
            if sym in vocab:  # would clash with a BPE token of the same spelling: keep it in the manifest only
                extra_raw[idx] = sym
            else:
                vocab[sym] = idx
        vocab[MASK_TOKEN] = mask_id
        vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        with open(directory / "vocab.json", "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(directory / "merges.txt", "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write(f"{a} {b}\n")
        return {
            "vocab_file": "vocab.json",
            "merges_file": "merges.txt",
            "raw_symbols": {str(k): v for k, v in sorted(extra_raw.items())},
        }

    @classmethod
    def load_files(cls, directory: Path, manifest: dict) -> ByteLevelBPE:
        if manifest.get("vocab_file") != "vocab.json" or manifest.get("merges_file") != "merges.txt":
            raise ValueError(
                f"{directory}: unexpected file names {manifest.get('vocab_file')!r}, {manifest.get('merges_file')!r}"
            )
        raw = {int(k): v for k, v in manifest.get("raw_symbols", {}).items()}
        return cls.from_hf_layout(directory, raw_symbols=raw)

    # -- text <-> ids --------------------------------------------------------------------------------------------
    def encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        if len(pieces) == 1:
            encoded = [self._tok.encode(pieces[0], add_special_tokens=False).ids]
        elif pieces:
            encoded = [e.ids for e in self._tok.encode_batch(pieces, add_special_tokens=False)]
        else:
            return []
        table = self._internal_to_id
        return [[table[i] for i in ids] for ids in encoded]

    def is_decodable(self, idx: int) -> bool:
        return idx in self._id_to_internal

    def decode_run(self, ids: list[int]) -> str:
        """Byte-level decode of text ids together (invalid UTF-8 -> U+FFFD)."""
        return self._tok.decode([self._id_to_internal[i] for i in ids], skip_special_tokens=False)

    def symbol(self, idx: int) -> str:
        """BPE token (e.g. ``'Ġwhat'``) or raw dict symbol of a text id."""
        return self._index_to_text[idx]

    def index(self, token: str) -> int | None:
        if token in self.token_to_index:
            return self.token_to_index[token]
        return self._raw_symbol_to_index.get(token)
