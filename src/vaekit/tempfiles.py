"""Temp files beside their destination, named before they exist, so none outlives a stop.

A write goes to `.NAME.XXXXXXXX` beside NAME and is renamed over it when complete. Ctrl-C or a
SIGTERM can land anywhere, including between a temp file's creation and the `try` that removes it:
hence every name is recorded *before* the file is created, and `remove_pending()` (run when a
command ends, and at interpreter exit) removes whatever an interrupted write left.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

PENDING: set[str] = set()  # temp files that exist or may exist: named, not yet renamed or removed
T = TypeVar("T")
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def new_temp(dest: Path) -> tuple[int, str]:
    """Create `.{dest.name}.` + 8 hex characters in dest's folder, mode 0666 less the umask;
    returns (fd, name). The name is in PENDING from before the file exists."""
    return claim_name(dest, lambda tmp: os.open(tmp, FLAGS, 0o666))


def new_temp_dir(dest: Path) -> str:
    """Make the folder `.{dest.name}.` + 8 hex characters beside dest (mode 0777 less the umask);
    returns its name, in PENDING from before the folder exists."""
    return claim_name(dest, os.mkdir)[1]


def claim_name(dest: Path, make: Callable[[str], T]) -> tuple[T, str]:
    """(make(tmp), tmp) for a fresh temp name tmp beside dest, recorded in PENDING before make
    creates it; a name someone else holds (FileExistsError) is forgotten and another drawn."""
    while True:
        tmp = os.path.join(dest.parent, f".{dest.name}.{secrets.token_hex(4)}")
        PENDING.add(tmp)
        try:
            return make(tmp), tmp
        except FileExistsError:  # someone else's temp file by that name: not ours to remove
            PENDING.discard(tmp)


def remove_temp(tmp: str) -> None:
    """Remove tmp (a file, or a folder with what it holds) if it is still there (it is not once
    renamed) and forget it."""
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    PENDING.discard(tmp)


def remove_pending() -> None:
    """Remove the temp files of writes that an interrupt ended midway."""
    for tmp in list(PENDING):
        with contextlib.suppress(OSError):
            remove_temp(tmp)


atexit.register(remove_pending)


def replace_folder(work: str | Path, dest: Path) -> None:
    """Put the complete folder `work` at dest, replacing the folder there, if any: that one is
    moved aside (under a name outside PENDING, so no cleanup removes it), `work` renamed in, then
    the old one removed. Interrupted or failed in between, the old folder is renamed back: dest
    holds the old folder or the new one, whole, never neither."""
    aside = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
    try:
        if dest.exists():
            os.rename(dest, aside)
        os.rename(work, dest)
    except BaseException:
        if aside.exists() and not dest.exists():
            os.rename(aside, dest)
        raise
    finally:
        if dest.exists() and aside.exists():
            shutil.rmtree(aside, ignore_errors=True)
