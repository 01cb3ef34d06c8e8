"""Errors caused by what a user typed or pointed at (a missing file, a bad option value).

The ``ofa-*`` commands print these as one line and exit with status 2 (``ofa_lightning/cli/_hydra.py``);
``OFA_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the traceback instead.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad user input: the message says what is wrong and how to fix it, in one line."""
