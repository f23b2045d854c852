"""Atomic file writes: a file is either the old one or the whole new one, never half of each.

Each writer goes to a temporary file in the same folder, then renames it over
the target (`os.replace`, atomic on POSIX and Windows). Plots, the explorer and
the run folder all write through here, so a full disk or another I/O error
while writing any of them becomes one `WriteError` that names the file.
"""

import contextlib
import json
import os
import pathlib
import tempfile


class WriteError(Exception):
    """A file could not be written (a full disk, say); the old file, if any, is intact.

    Attributes:
        path: the file that was being written.
        reason: the operating system's words for the cause.
    """

    def __init__(self, path, reason):
        super().__init__(f"could not write {path} ({reason})")
        self.path = pathlib.Path(path)
        self.reason = reason


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only on success.

    The temporary name keeps `path`'s suffixes, because Keras checks them
    (`.weights.h5`, `.keras`). On an exception the temporary file is removed and
    `path` is left as it was; an `OSError` (ENOSPC, EIO, ...) is raised again
    as `WriteError`, so that callers need not tell a failed write from a
    failed read.
    """
    path = pathlib.Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-",
                                             suffix="-" + path.name)
        os.close(handle)
        os.remove(temporary)  # writers such as h5py want to create the file themselves
    except OSError as error:
        raise WriteError(path, _reason(error)) from error
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        raise WriteError(path, _reason(error)) from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _reason(error):
    """The cause of an OSError in the operating system's words ("No space left on device")."""
    if error.errno:
        return os.strerror(error.errno)
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def write_bytes(path, content):
    """Writes `content` (bytes) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
