# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/07-tokens.md
"""Writing files so that a crash never leaves half of one (chapter 7)."""

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file so that ``path`` always holds either its old content or the complete
    new one.

    Args:
        path: The file to write.
        write: Fills the open (binary) temporary file, e.g. ``lambda file:
            torch.save(state, file)``.

    Raises:
        ValueError: If the disk is full; nothing is left behind and ``path`` is
            unchanged.
    """
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if disk_full(error):
            raise ValueError(
                f"no space left in {path.parent} while writing {path.name}; free some"
                " space (the previous version of the file is intact)"
            ) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """[`atomic_write`][tinytransformer.files.atomic_write] of bytes in memory."""
    atomic_write(path, lambda file: file.write(data))


def disk_full(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from, is "no space left"."""
    while error is not None:
        if (
            isinstance(error, OSError)
            and error.errno == errno.ENOSPC
            or "No space left" in str(error)
        ):
            return True
        error = error.__cause__ or error.__context__
    return False
