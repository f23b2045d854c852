"""Atomic file writes: a file is either the old one or the whole new one, never half of each.

Each writer goes to a temporary file in the same folder, then renames it over
the target (`os.replace`, atomic on POSIX and Windows). Plots, the explorer and
the run folder all write through here.
"""

import contextlib
import json
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only on success.

    The temporary name keeps `path`'s suffixes, because Keras checks them
    (`.weights.h5`, `.keras`). On an exception the temporary file is removed and
    `path` is left as it was.
    """
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="-" + path.name)
    os.close(handle)
    os.remove(temporary)  # writers such as h5py want to create the file themselves
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
