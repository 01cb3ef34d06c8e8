"""The kit's caption tokenizer: pycocoevalcap's PTB tokenization, without Java.

:func:`simple_tokenize` is :func:`~.ptb_tokenizer.ptb_tokenize`: Stanford PTBTokenizer (CoreNLP 3.4.1,
``-preserveLines -lowerCase``) followed by pycocoevalcap's punctuation removal, re-implemented rule for
rule and tested token for token against the Java tool on 20,000 noisy captions
(``tests/test_metrics_ptb.py``). Use :func:`~.ptb_tokenizer.ptb_tokenize_lines` for a whole batch exactly
as one pycocoevalcap call sees it (the one difference is described in :mod:`.ptb_tokenizer`).
"""

from __future__ import annotations

from .ptb_tokenizer import ptb_tokenize, ptb_tokenize_lines

__all__ = ["simple_tokenize", "ptb_tokenize", "ptb_tokenize_lines"]

simple_tokenize = ptb_tokenize
