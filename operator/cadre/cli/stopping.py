"""Stopping the operator on SIGTERM, reliably.

kopf, run in the main thread, takes SIGTERM through asyncio's signal handling, which learns
of a signal from a byte written to the loop's self-pipe. Threads waking the loop (every sync
handler that finishes does) write to the same pipe; under load it fills, and a signal that
arrives then is dropped ("Exception ignored when trying to write to the signal wakeup fd:
BlockingIOError"): with 1,000 Tasks in flight the operator ignored SIGTERM until the kubelet
would kill it. So kopf runs on a thread of its own with a stop flag, and the main thread, which
runs nothing else, takes the signals with a plain handler that only sets the flag."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_stopped(run: Callable[[threading.Event], None]) -> None:
    """``run(stop)`` on a thread; SIGTERM or SIGINT sets ``stop``, and ``run`` is expected to
    return soon after. Returns when it does; what it raised is raised here."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as err:  # handed to the main thread, which exits with it
            failures.append(err)

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    worker = threading.Thread(target=target, name="operator")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.5)  # a timed join lets the signal handler run promptly
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        raise failures[0]
