"""OFA's vocabulary layout: the special tokens, the id blocks, and the literal ``<bin_i>``/``<code_i>``/``<mask>`` rule.

Every OFA vocabulary (English GPT-2 BPE, Chinese BERT WordPiece, or a small trained BPE) has the same layout,
identical to OFA's ``tasks/ofa_task.py`` dictionary::

    0 <s>   1 <pad>   2 </s>   3 <unk>
    4 .. 4+T-1          T text symbols (OFA: the lines of dict.txt, in file order)
    4+T                 <mask>
    4+T+1 ..            <code_0> .. <code_{C-1}>   (VQGAN image codes)
    ..                  <bin_0>  .. <bin_{B-1}>    (quantised box coordinates)

Literal special tokens inside a string
--------------------------------------
OFA never runs its text model over ``<bin_i>``/``<code_i>``/``<mask>``: it joins them with spaces and looks each
whitespace-separated symbol up in the dictionary, and concatenates that with encoded text (e.g. the grounded
captioning prompt ``" what does the region describe? region:"`` + 4 bins, or a detection target
``<bin..> x4`` + BPE(``" person"``)). :class:`LiteralSplitter` reproduces this with one rule:

* the literals ``<bin_N>``, ``<code_N>`` (N a decimal integer) and ``<mask>`` each become their single id;
* **all whitespace immediately before a literal is a separator and is dropped** (it produces no token);
* text after a literal keeps its leading whitespace, which the text model encodes as usual (``"<bin_3> person"``
  gives ``<bin_3>``, ``Ġperson``, exactly OFA's detection target).

``<bin_N>`` with N >= num_bins (or ``<code_N>`` with N >= num_codes) raises ``ValueError``, as does a zero-padded
number such as ``<bin_012>``. Anything else that merely looks like markup (``<s>``, ``</s>``, ``<bin_x>``,
``<|endoftext|>``) is ordinary text, as in OFA.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<s>", "<pad>", "</s>", "<unk>"
MASK_TOKEN = "<mask>"
CONTROL_TOKENS = (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0..3, fairseq order
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_CONTROL = len(CONTROL_TOKENS)

# A literal special token plus the whitespace run before it (the separator, dropped). The number is matched
# loosely ([0-9]+) so that zero-padded or out-of-range literals raise instead of being silently encoded as text.
LITERAL_RE = re.compile(r"\s*(<(bin|code)_([0-9]+)>|<mask>)")
BIN_OR_CODE_TOKEN_RE = re.compile(r"^<(bin|code)_([0-9]+)>$")


def as_int_list(xs: Iterable[Any]) -> list[int]:
    """A sequence of integer ids/numbers (list, tuple, tensor, array) as a list of ints."""
    if hasattr(xs, "tolist"):  # torch tensors / numpy arrays
        xs = xs.tolist()
    if isinstance(xs, (int, str)):
        raise TypeError(f"expected a sequence of ints, got {type(xs).__name__}")
    out = []
    for x in xs:
        if isinstance(x, bool) or int(x) != x:
            raise ValueError(f"expected integer ids/numbers, got {x!r}")
        out.append(int(x))
    return out


class VocabularyLayout:
    """The id blocks of an OFA vocabulary with ``num_text`` text symbols, ``num_codes`` codes and ``num_bins``
    bins, and the conversions between bin/code numbers, literal tokens and ids."""

    bos_id = BOS_ID
    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def __init__(self, num_text: int, num_codes: int = 8192, num_bins: int = 1000) -> None:
        for name, v in (("num_text", num_text), ("num_codes", num_codes), ("num_bins", num_bins)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        self._num_text = num_text
        self._num_codes = num_codes
        self._num_bins = num_bins

    @property
    def num_text_tokens(self) -> int:
        """Number of text symbols T between the 4 control tokens and ``<mask>``."""
        return self._num_text

    @property
    def mask_id(self) -> int:
        return NUM_CONTROL + self._num_text

    @property
    def code_offset(self) -> int:
        """Id of ``<code_0>``."""
        return self.mask_id + 1

    @property
    def bin_offset(self) -> int:
        """Id of ``<bin_0>``."""
        return self.code_offset + self._num_codes

    @property
    def num_codes(self) -> int:
        return self._num_codes

    @property
    def num_bins(self) -> int:
        return self._num_bins

    @property
    def code_range(self) -> tuple[int, int]:
        """Half-open ``(start, end)`` id range of the code tokens (OFA's ``--constraint-range``)."""
        return (self.code_offset, self.code_offset + self._num_codes)

    @property
    def bin_range(self) -> tuple[int, int]:
        """Half-open ``(start, end)`` id range of the bin tokens."""
        return (self.bin_offset, self.bin_offset + self._num_bins)

    @property
    def vocab_size(self) -> int:
        return self.bin_offset + self._num_bins

    def __len__(self) -> int:
        return self.vocab_size

    def check_id(self, idx: Any) -> int:
        i = int(idx)
        if i != idx or not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {idx!r} out of range [0, {self.vocab_size})")
        return i

    def is_text_id(self, idx: int) -> bool:
        return NUM_CONTROL <= idx < self.mask_id

    # -- special tokens <-> ids --------------------------------------------------------------------------------
    def special_token(self, idx: int) -> str:
        """Token string of a non-text id: ``<s>``.., ``<mask>``, ``<code_i>``, ``<bin_i>``."""
        if idx < NUM_CONTROL:
            return CONTROL_TOKENS[idx]
        if idx == self.mask_id:
            return MASK_TOKEN
        if self.code_offset <= idx < self.bin_offset:
            return f"<code_{idx - self.code_offset}>"
        if self.bin_offset <= idx < self.vocab_size:
            return f"<bin_{idx - self.bin_offset}>"
        raise ValueError(f"id {idx} is a text id, not a special token")

    def special_id(self, token: str) -> int | None:
        """Id of ``<s>``.., ``<mask>``, ``<code_N>``, ``<bin_N>``; None for any other string."""
        if token in CONTROL_TOKENS:
            return CONTROL_TOKENS.index(token)
        if token == MASK_TOKEN:
            return self.mask_id
        m = BIN_OR_CODE_TOKEN_RE.match(token)
        if m:
            return self.literal_id(m.group(1), m.group(2), token)
        return None

    def literal_id(self, kind: str, number: str, literal: str) -> int:
        n = int(number)
        if number != str(n):
            raise ValueError(f"malformed special token {literal!r}: write the number without leading zeros")
        if kind == "bin":
            if n >= self._num_bins:
                raise ValueError(
                    f"unknown bin token {literal!r}: this tokenizer has {self._num_bins} bins "
                    f"(<bin_0>..<bin_{self._num_bins - 1}>)"
                )
            return self.bin_offset + n
        if n >= self._num_codes:
            raise ValueError(f"unknown code token {literal!r}: this tokenizer has {self._num_codes} codes")
        return self.code_offset + n

    def split_literals(self, text: str) -> list[str | int]:
        """Split into text pieces (str) and literal-token ids (int), dropping whitespace before literals."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        parts: list[str | int] = []
        pos = 0
        for m in LITERAL_RE.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            if m.group(1) == MASK_TOKEN:
                parts.append(self.mask_id)
            else:
                parts.append(self.literal_id(m.group(2), m.group(3), m.group(1)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    # -- bins and codes ----------------------------------------------------------------------------------------
    def bins_to_ids(self, bins: Iterable[int]) -> list[int]:
        """Bin numbers (0..num_bins-1) -> token ids."""
        out = []
        for b in as_int_list(bins):
            if not 0 <= b < self._num_bins:
                raise ValueError(f"bin {b} out of range [0, {self._num_bins})")
            out.append(self.bin_offset + b)
        return out

    def ids_to_bins(self, ids: Iterable[int]) -> list[int]:
        """Token ids -> bin numbers; ids outside :attr:`bin_range` raise ``ValueError``."""
        lo, hi = self.bin_range
        out = []
        for i in as_int_list(ids):
            if not lo <= i < hi:
                raise ValueError(f"id {i} is not a bin token (bin ids are [{lo}, {hi}))")
            out.append(i - lo)
        return out

    def codes_to_ids(self, codes: Iterable[int]) -> list[int]:
        """VQGAN codes (0..num_codes-1) -> token ids (OFA: code + len(dict) - num_codes - num_bins)."""
        out = []
        for c in as_int_list(codes):
            if not 0 <= c < self._num_codes:
                raise ValueError(f"code {c} out of range [0, {self._num_codes})")
            out.append(self.code_offset + c)
        return out

    def ids_to_codes(self, ids: Iterable[int]) -> list[int]:
        """Token ids -> VQGAN codes; ids outside :attr:`code_range` raise ``ValueError``."""
        lo, hi = self.code_range
        out = []
        for i in as_int_list(ids):
            if not lo <= i < hi:
                raise ValueError(f"id {i} is not a code token (code ids are [{lo}, {hi}))")
            out.append(i - lo)
        return out
