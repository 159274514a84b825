"""Property-based API tests: Schemathesis reads the edge's own /openapi.json and drives every
public operation through the edge with valid and invalid inputs (examples, boundary values,
fuzzing, stateful sequences), signed in, checking every response against the document:
no server error, every status documented, every body and header in its schema, invalid input
rejected, valid input accepted, wrong methods 405. Configuration: tests/fuzz/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stack.launcher import Stack
from tests.helpers import Http, sign_up_many

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
USERS = 16  # per-user limits see many users, as in production
SEED = os.environ.get("FUZZ_SEED", "20261203")  # reproducible in CI; set another to explore


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    stack: Stack, edge: Http, tmp_path: Path
) -> None:
    operations = sum(len(ops) for ops in edge.get("/openapi.json").json()["paths"].values())
    tokens = tmp_path / "tokens"
    users = sign_up_many(stack.topo.edge_port, USERS, "fuzz")
    tokens.write_text("".join(f"{u.token}\n" for u in users))
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(FUZZ / "schemathesis.toml"),
            "run",
            f"http://127.0.0.1:{stack.topo.edge_port}/openapi.json",
            "--checks",
            "all",
            "--workers",
            "1",  # Hypothesis's lambda-source cache is not thread-safe
            "--seed",
            SEED,
            "--no-color",
        ],
        env=os.environ | {"FUZZ_TOKENS": str(tokens), "PYTHONPATH": str(FUZZ.parent.parent)},
        cwd=tmp_path,  # its example database and reports stay out of the checkout
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-30_000:] + run.stderr[-5_000:]
    assert f"Tested: {operations}" in run.stdout, run.stdout[-5_000:]  # every one of them
