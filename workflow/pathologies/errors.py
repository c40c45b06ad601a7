"""User-facing errors: one clear line, no traceback, non-zero exit."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """An error caused by input the user controls (config, files, arguments).

    The message must name the offending file, key or value and say what to do.
    """


# a full disk, a full quota, a file-size limit (ulimit -f): the output could not be written in full
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(err: OSError) -> bool:
    """Whether ``err`` says the disk or quota is full (h5py reports it in the message, not in errno)."""
    text = str(err)
    return err.errno in DISK_FULL_ERRNOS or "No space left on device" in text or "Disk quota" in text


def one_line(err: UserError) -> str:
    """The message of ``err``; one raised in a DataLoader worker comes back wrapped in the worker's traceback,
    whose last line (``...UserError: <message>``) is the original message."""
    text = str(err)
    if text.startswith("Caught UserError in DataLoader worker"):
        last = text.strip().splitlines()[-1]
        text = last.partition("UserError: ")[2] or last
    return text


def cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command-line ``main`` so a :class:`UserError` (or a full disk) prints one line and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as err:
            if not is_disk_full(err):
                raise
            # outputs are written atomically, so nothing half-written is left behind
            reason = os.strerror(err.errno) if err.errno else str(err).strip().splitlines()[0]
            print(f"error: no space left to write {err.filename or 'an output'} ({reason}); free space or "
                  "raise the quota and rerun", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
