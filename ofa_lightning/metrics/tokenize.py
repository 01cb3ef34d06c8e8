"""Java-free caption tokenizer approximating the COCO-caption PTB tokenization.

The official COCO caption evaluation runs Stanford's PTBTokenizer (Java) with lower-casing and then
drops punctuation tokens (quotes, brackets, ``. ? ! , : ; - -- ...``). :func:`simple_tokenize` does the
same for the text that captioning models actually produce:

* lower-cases, maps curly quotes to straight ones;
* removes ``. , ? ! : ; " ( ) [ ] { } ` …``, except a ``.`` or ``,`` between two digits (``3.5``, ``1,000``);
* splits English clitics off the way PTB does (``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``,
  ``i'm`` -> ``i 'm``);
* strips quote-apostrophes and dashes at word edges (``'hello'`` -> ``hello``; a lone ``-`` vanishes)
  while keeping them inside words (``black-and-white``, ``o'clock``);
* joins the tokens with single spaces.

Known differences from PTB: symbols such as ``$ % &`` are not split from adjacent words, and
abbreviations like ``a.m.`` lose their periods. Use :func:`~ofa_lightning.metrics.official.official_caption_scores`
when the exact Java tokenization matters.
"""

from __future__ import annotations

import re

__all__ = ["simple_tokenize"]

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": " "})
# '.' or ',' unless it sits between two digits
_SEP_PUNCT = re.compile(r"(?<!\d)[.,]|[.,](?!\d)")
_OTHER_PUNCT = re.compile(r"[?!:;\"()\[\]{}`]")
_CLITIC = re.compile(r"(?<=[a-z0-9])(n't|'s|'re|'ve|'ll|'d|'m)(?![a-z0-9])")
_CLITICS = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}


def simple_tokenize(text: str) -> str:
    """Tokenize a caption; returns the tokens joined by single spaces (see module docstring)."""
    t = text.lower().translate(_QUOTES)
    t = _SEP_PUNCT.sub(" ", t)
    t = _OTHER_PUNCT.sub(" ", t)
    t = _CLITIC.sub(r" \1", t)
    tokens = []
    for tok in t.split():
        if tok not in _CLITICS:
            tok = tok.strip("'-")
        if tok:
            tokens.append(tok)
    return " ".join(tokens)
