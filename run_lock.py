"""One training run per run folder, enforced by an operating-system lock.

The first run to start holds an exclusive `fcntl` lock on `<run folder>/.lock`
for as long as it runs. The lock belongs to the process, so the kernel drops
it when the process ends in any way, SIGKILL and the OOM killer included: a
run that was killed never blocks the next one. The lock file itself is never
written (it stays empty) and never removed (removing it would let two runs
lock two different files of the same name).

A second run into a held folder is refused before it reads or writes
anything there, with one line naming the process that holds it.
"""

import contextlib
import os
import pathlib
import struct
import sys

import run_folder

try:
    import fcntl
except ImportError:  # Windows: no fcntl; runs there are not locked (docs/reliability.md)
    fcntl = None

LOCK_FILE = ".lock"
# struct flock on 64-bit machines. Linux: l_type, l_whence, l_start, l_len, l_pid;
# macOS and the BSDs: l_start, l_len, l_pid, l_type, l_whence.
_FLOCK_LAYOUT = "hhqqi4x" if sys.platform.startswith("linux") else "qqihh"
_FLOCK_FIELDS = (("type", "whence", "start", "length", "pid")
                 if sys.platform.startswith("linux")
                 else ("start", "length", "pid", "type", "whence"))


class RunFolderBusy(run_folder.RunFolderError):
    """Another process is training into the run folder."""


def holder_of(lock_file_descriptor):
    """The process id that holds a write lock on the open file, or None if unknown.

    F_GETLK is POSIX's way to ask; on file systems that cannot say (some
    network file systems answer 0) the answer is None.
    """
    wanted = {"type": fcntl.F_WRLCK, "whence": os.SEEK_SET, "start": 0, "length": 0, "pid": 0}
    query = struct.pack(_FLOCK_LAYOUT, *(wanted[field] for field in _FLOCK_FIELDS))
    try:
        answer = fcntl.fcntl(lock_file_descriptor, fcntl.F_GETLK, query)
    except OSError:
        return None
    held = dict(zip(_FLOCK_FIELDS, struct.unpack(_FLOCK_LAYOUT, answer)))
    return held["pid"] if held["type"] != fcntl.F_UNLCK and held["pid"] > 0 else None


def describe_process(pid):
    """'process 1234 (python train_vae.py --out runs/vae)', as far as /proc tells."""
    if pid is None:
        return "another process"
    try:
        command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        command = " ".join(part.decode(errors="replace") for part in command if part)
    except OSError:
        command = ""
    if command.startswith(("python", "/")):  # drop the interpreter's path, keep the script
        command = " ".join(["python"] + command.split()[1:])
    return f"process {pid}" + (f" ({command})" if command else "")


@contextlib.contextmanager
def hold_run_folder(out, hold=True):
    """Creates the run folder if needed and holds its lock for the block.

    With `hold` False (a process of a multi-process run other than process 0,
    which writes nothing) the block runs without the folder or its lock.

    Raises:
        RunFolderBusy: if another process holds the folder.
        RunFolderError: if the folder can't be made or written.
    """
    if not hold:
        yield pathlib.Path(out)
        return
    out_dir = run_folder.prepare_output_folder(out)
    if fcntl is None:
        yield out_dir
        return
    lock_path = out_dir / LOCK_FILE
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise run_folder.RunFolderError(f"cannot create the lock file {lock_path} "
                                        f"({error.strerror}): choose another --out") from None
    try:
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFolderBusy(
                f"{out_dir} is in use by {describe_process(holder_of(descriptor))}, which is "
                f"training into it: wait for it to end, or choose another --out") from None
        yield out_dir
    finally:
        os.close(descriptor)  # closing the file releases the lock
