"""Schemathesis hooks (loaded by ``tests/fuzz/schemathesis.toml``): every request carries a
signed-in user's token, taken in turn from a pool (``FUZZ_TOKENS``: a file of access tokens,
one per line), so per-user limits see many users; and its own client address, so per-address
limits see many clients. Operations that need no token get one too: they must work with it."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path
from typing import Any

import schemathesis

_tokens = itertools.cycle(Path(os.environ["FUZZ_TOKENS"]).read_text().split())


@schemathesis.auth(refresh_interval=None)
class Tokens:
    def get(self, case: Any, context: Any) -> str:
        return next(_tokens)

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    case.headers = {**(case.headers or {}), "X-Forwarded-For": address}
