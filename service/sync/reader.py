"""A sync's read path in a child process, so reading and storing use two cores.

One Python process runs Python code on one core at a time (the interpreter lock). A large
initial sync spends about half its time reading and normalising vendor pages (HTTP, JSON or
CSV parsing, building records and their rows) and half storing them; a reader thread
(`engine.prefetched`) overlaps only the network waits. Here the reader is a forked child:
it runs the connector's `read` and turns each page into a `PreparedPage` of plain tuples,
while the parent stores the page before, commits it with its checkpoint, renews the lease
and decides, as it does for a page read in process.

Why fork: the child starts with the connector already built (its credentials, host policy,
retry policy, clock, open HTTP pool), so nothing secret is serialised, no interpreter starts
and no module is imported again. The child never touches the database: only the parent
reads, writes and commits. The child's own state that the parent needs afterwards (the
run's request counters, the vendor's quota header, a session token) comes back with the
last message; see `Connector.read_state`.

Flow control: the child queues at most `_PAGES_AHEAD` pages for a sending thread, which
blocks on the pipe until the parent takes each page, so memory stays flat whatever the
window's size.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from connectors.errors import ConnectorError

T = TypeVar("T")

#: How often the parent, waiting for a page, checks that the child is still alive.
_LIVENESS_SECONDS = 1.0
#: Pages the child may have read ahead of the one the parent is storing.
_PAGES_AHEAD = 3
#: How long a stopped child may take to exit before it is killed.
_EXIT_SECONDS = 5.0


class ReaderProcessError(ConnectorError):
    """The reader process failed in a way its own error could not describe to the parent."""

    error_class = "reader_process"


def can_fork() -> bool:
    """True where the reader process can be used (POSIX: the `fork` start method)."""
    return "fork" in multiprocessing.get_all_start_methods()


def read_in_child(
    produce: Callable[[], Iterator[T]],
    state: Callable[[], Any],
    adopt: Callable[[Any], None],
) -> Iterator[T]:
    """Iterate `produce()` run in a forked child process.

    Items and the error that ends `produce()`, if any, are pickled across a pipe; after the
    last item, or with the error, `state()` is taken in the child and handed to `adopt` in
    the parent before this iterator ends or raises. Stopping early (closing this iterator)
    stops the child.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_child,
        args=(produce, state, send, receive),
        name="okr-sync-reader",
        daemon=True,
    )
    # No collection between the fork and the child's `gc.freeze()`: one could finalise,
    # in the child, a copy of a database connection whose socket the parent is using.
    collecting = gc.isenabled()
    gc.disable()
    try:
        child.start()
    finally:
        if collecting:
            gc.enable()
    send.close()
    finished = False
    try:
        while True:
            while not receive.poll(_LIVENESS_SECONDS):
                if not child.is_alive() and not receive.poll(0):
                    raise ReaderProcessError(
                        f"the reader process exited (status {child.exitcode}) before its last page"
                    )
            try:
                message = pickle.loads(receive.recv_bytes())  # noqa: S301 - our own child
            except EOFError:
                child.join(_EXIT_SECONDS)
                raise ReaderProcessError(
                    f"the reader process exited (status {child.exitcode}) before its last page"
                ) from None
            tag = message[0]
            if tag == "item":
                yield message[1]
                continue
            finished = True
            adopt(message[-1])
            if tag == "error":
                raise message[1]
            return
    finally:
        receive.close()
        if not finished:
            child.terminate()
        child.join(_EXIT_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()


def _child(
    produce: Callable[[], Iterator[Any]],
    state: Callable[[], Any],
    send: Connection,
    inherited: Connection,
) -> None:
    # The parent's handlers (a worker's graceful stop) mean nothing here: the parent stops
    # the child with SIGTERM, and Ctrl-C in a terminal stops both.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # An event loop's signal wake-up socket (uvicorn's, in `serve`) is the parent's.
    signal.set_wakeup_fd(-1)
    # Out of the collector's reach, the parent's objects are never traversed here: a full
    # collection would touch (and so copy) every page of memory shared with the parent,
    # and could finalise a copy of an object holding one of the parent's sockets.
    # Measured: a 200,000-lead REST read took 10.2 s without this, 7.4 s with it.
    gc.freeze()
    gc.enable()
    # Only the parent may hold the read end: then a parent that has gone makes `send` fail.
    inherited.close()
    # Pages wait here while the parent stores an earlier one, so that neither process
    # waits for the other at every page (a pipe holds less than one page).
    outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=_PAGES_AHEAD)
    sender = threading.Thread(target=_deliver, args=(outbox, send), name="okr-sync-reader-send")
    sender.start()

    def post(message: tuple[Any, ...]) -> None:
        outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    try:
        for item in produce():
            post(("item", item))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        post(("error", _portable(exc), state()))
    else:
        post(("done", state()))
    finally:
        outbox.put(None)
        sender.join()
        send.close()


def _deliver(outbox: queue.Queue[bytes | None], send: Connection) -> None:
    while (payload := outbox.get()) is not None:
        try:
            send.send_bytes(payload)
        except OSError:
            # The parent stopped reading: it has what it needs, or it has gone. Nothing in
            # this process is left to clean up or flush (it shares the parent's files).
            os._exit(0)


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives pickling, else an error with the same message and class name."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object, round-tripped
    except Exception:  # noqa: BLE001 - an error type whose constructor pickle cannot call
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        portable = ReaderProcessError(message)
        portable.error_class = getattr(exc, "error_class", ReaderProcessError.error_class)
        return portable
    return exc
