"""Errors caused by what a user typed or pointed at (a missing file, a bad option value).

The ``ofa-*`` commands print these as one line and exit with status 2 (``ofa_lightning/cli/_hydra.py``);
``OFA_DEBUG=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``) shows the traceback instead.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad user input: the message says what is wrong and how to fix it, in one line."""


# errno values that mean "no room left"; torch's zip writer turns a failed write into "[Errno 5] ... unexpected pos"
_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT
_LOW_FREE_BYTES = 64 << 20


def disk_full_message(exc: BaseException, folder: str | None = None) -> str | None:
    """``"the disk is full (...)"`` when ``exc`` (or any exception it was raised from) is a full disk or quota, or
    an I/O error written while ``folder``'s file system has under 64 MiB free; else None."""
    import os
    import shutil

    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for item in chain:
        if getattr(item, "errno", None) in _FULL_ERRNOS or "No space left on device" in str(item):
            return f"the disk is full ({item})"
    io_error = any(getattr(e, "errno", None) == 5 or "unexpected pos" in str(e) for e in chain)
    if io_error and folder is not None:
        try:
            free = shutil.disk_usage(os.fspath(folder)).free
        except OSError:
            return None
        if free < _LOW_FREE_BYTES:
            return f"the disk is full ({free >> 20} MiB free in {folder}; {chain[0]})"
    return None
