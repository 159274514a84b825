"""Child processes of the launcher: started in their own session (so a terminal's Ctrl-C reaches
only the launcher, which then stops them in order), tied to the launcher's life with
PR_SET_PDEATHSIG (so a killed launcher leaves no orphans), and logged to one file each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Runs between the launcher and the real program: switch user if asked, ask the kernel for
# SIGTERM when the launcher dies, then exec. Doing this in a shim instead of Popen's
# preexec_fn/user= lets CPython spawn with vfork: a plain fork() would run gRPC's at-fork
# handlers in the child, which abort when the launcher has live gRPC threads (the test session).
_EXEC_SHIM = """
import ctypes, os, pwd, signal, sys
user, launcher, death, argv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
if user:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
ctypes.CDLL(None).prctl(1, death)  # PR_SET_PDEATHSIG
if os.getppid() != launcher:
    sys.exit("launcher exited before the child started")
os.execvp(argv[0], argv)
"""


def shim_argv(
    argv: Sequence[str], user: str | None = None, death_signal: int = signal.SIGTERM
) -> list[str]:
    """``argv`` wrapped in the exec shim (optionally as ``user``); the child gets
    ``death_signal`` when the launcher dies."""
    shim = [sys.executable, "-S", "-c", _EXEC_SHIM, user or "", str(os.getpid())]
    return [*shim, str(int(death_signal)), *argv]


class ProcessFailed(RuntimeError):
    """A child exited or never became ready; the message carries the tail of its log."""


@dataclass
class Proc:
    """One child process and how to stop it."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None  # switch to this system user (Postgres refuses to run as root)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0  # then SIGKILL
    death_signal: int = signal.SIGTERM  # sent by the kernel if the launcher dies
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                shim_argv(self.argv, self.user, self.death_signal),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """True when the process has exited within ``timeout`` seconds."""
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        self.send(signal.SIGKILL)
        self.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(
        self, probe: Callable[[], bool], timeout: float, interval: float = 0.05
    ) -> float:
        """Polls ``probe`` until it returns True; returns the seconds it took.

        Fails fast, with the log tail, when the process exits first.
        """
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if self.popen is not None and not self.alive():
                raise ProcessFailed(
                    f"{self.name} exited with {self.popen.returncode} before it was ready;"
                    f" last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if probe():
                    return time.monotonic() - start
            except Exception:  # noqa: BLE001, S110 - not ready yet is any failure
                pass
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{self.name} not ready after {timeout:.0f}s; last lines of"
                    f" {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(interval)


def stop_all(procs: Sequence[Proc]) -> None:
    """Signals every process at once, then waits for each, killing stragglers at their timeout."""
    for proc in procs:
        proc.send(proc.stop_signal)
    started = time.monotonic()
    for proc in procs:
        remaining = proc.stop_timeout - (time.monotonic() - started)
        if not proc.wait(max(remaining, 0)):
            proc.kill()


def is_root() -> bool:
    return os.geteuid() == 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (an empty list once it has exited)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [pid] + [p for c in children for p in process_tree(int(c))]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (nginx: master and workers)."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except FileNotFoundError:  # exited while we looked
            continue
        total += sum(
            int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmRSS:")
        )
    return total
