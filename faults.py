"""How a training run ends when something outside it stops it: SIGTERM, Ctrl-C, a failed write.

Each ends the same way: the checkpoint of the last finished epoch stays as it
was, one line on stderr says what happened and how to continue, and the exit
status tells a scheduler which of them it was.

    EXIT_INTERRUPTED  130   Ctrl-C (128 + SIGINT), as shells report it
    EXIT_TERMINATED   143   SIGTERM (128 + SIGTERM): kill, Slurm, Kubernetes, docker stop
    EXIT_WRITE_FAILED  74   a file could not be written (EX_IOERR of sysexits.h)
"""

import contextlib
import os
import pathlib
import signal
import threading

import run_folder

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_WRITE_FAILED = os.EX_IOERR if hasattr(os, "EX_IOERR") else 74


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A `KeyboardInterrupt`, so that it unwinds a run exactly as Ctrl-C does."""


def _raise_terminated(signal_number, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises `Terminated` instead of ending the process silently.

    Python only installs signal handlers from the main thread; elsewhere (a
    run started from a worker thread) the block leaves SIGTERM as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stops_deferred():
    """Within the block, SIGINT and SIGTERM wait: each takes effect as the block ends.

    A finished epoch writes its checkpoint and then its history; a stop between
    the two would leave history.csv an epoch behind the checkpoint. Signals that
    are ignored stay ignored, and off the main thread (where Python installs no
    handlers) the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    deferred = {number: handler for number, handler in previous.items()
                if handler not in (signal.SIG_IGN, None)}  # None: set outside Python
    for number in deferred:
        signal.signal(number, lambda received, frame: pending.append(received))
    try:
        yield
    finally:
        for number, handler in deferred.items():
            signal.signal(number, handler)
        for number in pending:
            if callable(deferred[number]):
                deferred[number](number, None)
            else:  # SIG_DFL: the signal's default action, as if it had not waited
                signal.raise_signal(number)


def what_is_kept(prog, out):
    """The end of the line that a stopped run prints: what survives, and the command to go on."""
    checkpoint = pathlib.Path(out) / run_folder.CHECKPOINT_FILE
    if checkpoint.is_file():
        return (f"the last finished epoch is saved in {checkpoint}: "
                f"continue with python {prog} --out {out} --resume")
    return "no checkpoint was saved: train again"


def stopped_line(prog, out, cause):
    """One line for stderr: `cause` ("interrupted", say), then what is kept and what to do."""
    return f"{prog}: {cause}; {what_is_kept(prog, out)}"
