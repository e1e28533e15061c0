"""Writes that a kill or a full disk cannot leave half done: nothing a user has is ever damaged.

A file is written to a temporary sibling, flushed to the disk (fsync), renamed over its target and the
directory fsynced, so the name shows either the old bytes or the new ones, after a crash as well. A
directory (a prepared split) is built as a temporary sibling and renamed into place the same way.
Every rename goes through `rename_into_place`: the one place a fault test interrupts.

Only the standard library (and numpy scalars for JSON): data/, checkpoint.py and the CLI all use it,
and `read_json_object` to read such JSON back with one-line errors.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (a rename is an entry in the directory, not in the file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform that cannot open directories (Windows): the rename is all it offers
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync a directory
            raise
    finally:
        os.close(fd)


# a temporary file of write_bytes (`.<name>.` + mkstemp's 8 random characters) that a kill left behind
LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def remove_leftovers(directory: str | os.PathLike) -> None:
    """Remove the temporary files that writes killed before their rename left in `directory` (a SIGKILL
    runs no cleanup); the files they were to replace are whole."""
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_file() and LEFTOVER.match(path.name):
                path.unlink(missing_ok=True)


def rename_into_place(source: Path, target: Path) -> None:
    """The commit of every write here: one rename, then the directory synced."""
    os.replace(source, target)
    fsync_directory(target.parent)


def _named(error: OSError, path: Path) -> OSError:
    """The same error naming the file the user asked for (a write's error names no file, or the temporary one)."""
    return type(error)(error.errno, error.strerror or str(error), str(path))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` by `data` in one step; on any failure the previous file stays as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise _named(error, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        rename_into_place(Path(tmp), path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise _named(error, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_figure(path: str | os.PathLike, figure: Any, **savefig_options: Any) -> None:
    """A matplotlib figure drawn in memory, then written in one step: never half an image. The format
    follows the suffix, as savefig(path) would choose it (.png, .svg, .pdf)."""
    buffer = io.BytesIO()
    kind = Path(path).suffix.lstrip(".").lower() or "png"
    figure.savefig(buffer, format=kind, **savefig_options)
    write_bytes(path, buffer.getvalue())


def write_json(path: str | os.PathLike, value: Any) -> None:
    write_text(path, json.dumps(value, indent=1, default=json_default) + "\n")


def read_json_object(path: str | os.PathLike, error: type[Exception]) -> dict:
    """The JSON object a file holds (what write_json wrote, or a hand-edited copy); anything else,
    or a file that cannot be read, raises `error` with one line naming the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as failure:
        raise error(f"{path} is not valid JSON: {failure}") from None
    except OSError as failure:
        raise error(f"cannot read {path}: {failure.strerror}") from None
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object; got {type(value).__name__}")
    return value


def json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def recover_directory(target: str | os.PathLike) -> None:
    """Undo what a kill left of an earlier staged_directory at `target`: the previous directory, moved
    aside, goes back into place where nothing replaced it (and is removed where something did);
    unfinished new ones are removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for staging in target.parent.glob(f".{glob.escape(target.name)}.new-*"):
        shutil.rmtree(staging, ignore_errors=True)
    for aside in sorted(target.parent.glob(f".{glob.escape(target.name)}.old-*")):
        if target.exists():  # the new one made it into place: the kill came before the old one was deleted
            shutil.rmtree(aside, ignore_errors=True)
        else:
            rename_into_place(aside, target)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of `target` to fill; renamed into place when the block ends without error,
    removed when it fails, so `target` holds either nothing new or all of it. An existing `target` is
    moved aside first and deleted only once the new one is in place (a kill between the two renames
    leaves it aside: recover_directory, called here first, puts it back)."""
    target = Path(target)
    try:
        recover_directory(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    except OSError as error:
        raise _named(error, target) from None
    try:
        yield staging
        for path in staging.rglob("*"):  # the files' bytes on the disk before their names are
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        fsync_directory(staging)
        aside = None
        if target.exists():
            aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.rmdir(aside)
            rename_into_place(target, aside)
        rename_into_place(staging, target)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise _named(error, target) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_writable(directory: str | os.PathLike) -> None:
    """Fail now, before any work, where `directory` cannot be made or written: a file in its way, or a
    folder this user may not write in. Creates nothing (a probe file is made and removed at once)."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write to {directory}: {existing} is a file, not a folder",
                                 str(existing))
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".nextclick-probe-")
    except OSError as error:
        raise type(error)(error.errno, f"cannot write to {directory}: {existing} is not writable "
                                       f"({error.strerror})", str(existing)) from None
    os.close(fd)
    os.unlink(probe)
