"""``cadre operator`` stops on SIGTERM however busy it is (``cadre.cli.stopping``): the work
runs on a thread and the main thread only takes signals, so a signal is never lost in an event
loop's full self-pipe, as it was with 1,000 Tasks in flight."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from cadre.cli.stopping import run_until_stopped

# An event loop as busy as kopf's under load: threads wake it without pause (as finished sync
# handlers do), its callbacks block it for a while (so its self-pipe fills), and it waits for
# the stop flag as kopf does (on an executor thread). Under this load, a loop that takes SIGTERM
# with asyncio's own add_signal_handler (as kopf does in the main thread) lost it in 3 of 3
# tries on this machine.
BUSY_LOOP = textwrap.dedent(
    """
    import asyncio, threading, time
    from cadre.cli.stopping import run_until_stopped

    def run(stop):
        async def main():
            loop = asyncio.get_running_loop()
            def noop():
                pass
            def block():
                time.sleep(0.05)
                loop.call_later(0.05, block)
            def wake():
                while not stop.is_set():
                    for _ in range(10):
                        loop.call_soon_threadsafe(noop)
                    time.sleep(0.001)
            for _ in range(4):
                threading.Thread(target=wake, daemon=True).start()
            block()
            print("busy", flush=True)
            await loop.run_in_executor(None, stop.wait)
            print("stopping", flush=True)
        asyncio.run(main())

    run_until_stopped(run)
    print("stopped", flush=True)
    """
)


def test_sigterm_stops_a_busy_event_loop() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_LOOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "busy"
        threading.Event().wait(1.0)  # the loop's self-pipe fills meanwhile
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.split() == ["stopping", "stopped"]


def test_what_the_work_raises_is_raised() -> None:
    def run(stop: threading.Event) -> None:
        raise ValueError("bad setting")

    with pytest.raises(ValueError, match="bad setting"):
        run_until_stopped(run)
    # The handlers it installed are gone again.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
