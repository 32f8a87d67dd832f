"""Child processes of one test (workers, signal senders): started with their
output read line by line, and all killed — SIGCONT first, for one a test
stopped — when the test ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATIENCE = 120.0  # a bound against hangs, not a timing assertion


class Children:
    """The child processes of one test, each with its output so far."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.readers: list[threading.Thread] = []
        self.output: dict[int, list[str]] = {}

    def start(
        self, args: list[str], env: Mapping[str, str], ready: threading.Event | None = None
    ) -> subprocess.Popen[str]:
        """Run ``python -m`` ``args`` from the repository; ``ready`` is set when the
        child prints a line starting with ``READY``."""
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        lines: list[str] = []
        self.output[proc.pid] = lines

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if ready is not None and line.startswith("READY"):
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.readers.append(reader)
        return proc

    def kill_all(self) -> None:
        """SIGKILL every child still running (continued first, if stopped), and
        close their output."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=PATIENCE)
        for reader in self.readers:
            reader.join(timeout=PATIENCE)
        for proc in self.procs:
            if proc.stdout is not None:
                proc.stdout.close()
