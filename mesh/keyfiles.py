"""Secrets made on first run and kept in a file (mode 0600), safe against concurrent first runs."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def ensure_secret_file(path: Path, make: Callable[[], bytes]) -> None:
    """Writes ``make()`` to ``path`` (mode 0600) unless the file exists. Two processes racing on
    a first run end with one file that both then read: the write goes to a private temporary
    file, and the link to ``path`` fails for the loser instead of replacing the winner's secret."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(make())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def secret_text(path: Path, nbytes: int = 24) -> str:
    """The secret in ``path``, made on first use: ``nbytes`` random bytes as URL-safe text."""
    ensure_secret_file(path, lambda: secrets.token_urlsafe(nbytes).encode())
    return path.read_text().strip()
