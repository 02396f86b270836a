"""Progress bars draw on a terminal only: output redirected to a file or a pipe holds no redraws
(`\r` updates, cursor codes), whatever FORCE_COLOR says; a terminal still gets its bar."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from models.terminal_progress import progress_on_terminal

ROOT = Path(__file__).resolve().parents[2]
SERIES_FITS = (
    "from models.forecasting.parallel import serial_map\n"
    "import time\n"
    "print(len(serial_map(lambda item: time.sleep(0.002) or item, list(range(300)))))\n"
)


def _environment(**extra: str) -> dict[str, str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    environment.pop("TQDM_DISABLE", None)
    return environment


def test_the_decision_follows_the_stream_and_the_wish() -> None:
    assert not progress_on_terminal(io.StringIO())
    closed = io.StringIO()
    closed.close()
    assert not progress_on_terminal(closed)
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            assert progress_on_terminal(terminal)
            assert not progress_on_terminal(terminal, wanted=False)
    finally:
        os.close(leader)
        os.close(follower)


@pytest.mark.slow  # starts a Python of its own
def test_a_tqdm_bar_writes_no_redraws_to_redirected_stderr(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", SERIES_FITS],
            cwd=ROOT,
            env=_environment(FORCE_COLOR="1"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=120,
            check=True,
        )
    assert done.stdout == "300\n"
    written = log.read_text()
    assert "\r" not in written and "series" not in written, written[:200]


@pytest.mark.slow  # starts a Python of its own
def test_a_tqdm_bar_still_draws_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    # a new pseudo-terminal is 0 columns wide, where tqdm draws nothing: give it 100
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", SERIES_FITS],
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closes when the child exits
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0
    finally:
        os.close(leader)
    drawn = b"".join(chunks).decode(errors="replace")
    assert "\r" in drawn and "series" in drawn


@pytest.mark.slow  # starts a Python of its own
def test_a_rich_bar_writes_nothing_to_redirected_stdout_even_with_force_color(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from configs.settings import Settings\n"
        "from features.forget import forget_user\n"
        "report = forget_user(Settings(data_dir=Path(sys.argv[1])), 'u1', requested_by='t', reason='t')\n"
        "print('status', report.status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        cwd=ROOT,
        env=_environment(FORCE_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # rich, left to itself, takes FORCE_COLOR for a terminal and draws into the pipe
    assert done.stdout == "status not_found\n", repr(done.stdout[:200])
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
