"""`tradewind serve`'s wait on its `serve run` child: a stop signal to the command is passed on
once as SIGINT (Ctrl-C) and the command exits 0; a child that ignores it is killed after the grace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from serving.deploy import wait_forwarding_signals

# a child that writes which signal it got into a file, then exits (or ignores SIGINT altogether)
CHILD = """
import signal, sys, time
path = sys.argv[1]
def stop(signum, frame):
    open(path, "w").write(signal.Signals(signum).name)
    sys.exit(3)
signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[2] == "ignore" else stop)
signal.signal(signal.SIGTERM, stop)
open(path + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


def start_child(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    got = tmp_path / "got"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(got), mode], start_new_session=True)
    deadline = time.monotonic() + 30
    while not Path(f"{got}.ready").exists():
        assert time.monotonic() < deadline and child.poll() is None, "the child never started"
        time.sleep(0.05)
    return child, got


def signal_self_once_forwarding(signum: int) -> None:
    """Send `signum` to this process as soon as `wait_forwarding_signals` has put its handler in
    place (never before: the default handlers would stop the test run itself)."""
    own = signal.getsignal(signum)

    def send() -> None:
        deadline = time.monotonic() + 30
        while signal.getsignal(signum) is own and time.monotonic() < deadline:
            time.sleep(0.01)
        if signal.getsignal(signum) is not own:
            os.kill(os.getpid(), signum)

    threading.Thread(target=send, daemon=True).start()


def test_sigterm_to_the_command_reaches_the_child_as_sigint_and_exits_0(tmp_path: Path) -> None:
    child, got = start_child(tmp_path, "stop")
    own_handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal_self_once_forwarding(signal.SIGTERM)
    assert wait_forwarding_signals(child, grace_s=20.0) == 0
    assert got.read_text() == "SIGINT" and child.returncode == 3
    # the command's own handlers are back (whatever they were: Ray installs one for SIGTERM)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == own_handlers


def test_a_child_that_ignores_the_stop_is_killed_after_the_grace(tmp_path: Path) -> None:
    child, got = start_child(tmp_path, "ignore")
    signal_self_once_forwarding(signal.SIGINT)
    started = time.monotonic()
    assert wait_forwarding_signals(child, grace_s=1.0) == 0
    assert child.returncode == -signal.SIGKILL and not got.exists()
    assert 1.0 <= time.monotonic() - started < 15.0


def test_a_child_that_ends_on_its_own_gives_its_exit_code(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    assert wait_forwarding_signals(child) == 7
