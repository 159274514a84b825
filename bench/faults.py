"""The fault suite (`make faults`): its own stack, two instances of every service, a closed loop
of mixed reads and writes through the edge, and one fault after another while it runs.

Each client thread owns its users, so the order of its writes is the order they were told
about: a like or a follow whose last acknowledged call was a create must exist afterwards, one
whose last was a delete must not (pairs whose last call failed are unknown: either is right);
every acknowledged comment must exist; every acknowledged anonymous play must be counted. The
faults, in turn, each followed by the time until the mesh is whole again (no client call has
failed for a second and a canary like is counted):

- SIGKILL one of the two instances of each service (then it is started again);
- a rolling restart (SIGTERM, one instance at a time) of every service;
- the Postgres primary down for 10 s; the replica down for 10 s;
- Valkey flushed; Valkey down for 10 s (restarted from its append-only file);
- SeaweedFS down for 10 s.

Results: bench/results/faults.json, and the table printed (README.md, bench/README.md).

    python -m bench.faults        (make faults)
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from bench.common import LOAD_ENV, run_on_own_stack
from stack.launcher import Stack
from stack.procs import Proc
from stack.servers import postgres_ready, s3_ready
from tests.helpers import Http, SignedUpUser, sign_up_many
from tests.videos import publish

WORKERS = 8
USERS_PER_WORKER = 4
CREATORS = 6
DOWN_SECONDS = 10.0
SETTLE_SECONDS = 3.0  # load before each fault, so its window starts from a steady state
RECOVERY_LIMIT = 60.0
QUIET_SECONDS = 1.0  # no failed call for this long: recovered
SERVICES = ("activity", "upload", "feed", "precache")
INSTANCES = {service: 2 for service in SERVICES}


@dataclass
class Call:
    at: float  # monotonic, when it answered
    op: str
    status: int  # 0: the connection failed
    took: float

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500

    @property
    def write(self) -> bool:
        return self.op.endswith((".create", ".delete", ".record"))


@dataclass
class Ledger:
    """What one client thread was told, per thing it wrote."""

    likes: dict[tuple[str, str], bool | None] = field(default_factory=dict)  # None: unknown
    follows: dict[tuple[str, str], bool | None] = field(default_factory=dict)
    comments: set[str] = field(default_factory=set)
    plays: collections.Counter[str] = field(default_factory=collections.Counter)
    unknown_plays: collections.Counter[str] = field(default_factory=collections.Counter)


class Client:
    """One keep-alive connection to the edge that never retries: what a call answered is what
    is counted (a failed connection is status 0, and the next call opens a new one)."""

    def __init__(self, port: int, address: str) -> None:
        self.port, self.address = port, address
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, bytes]:
        headers = {"content-type": "application/json", "x-forwarded-for": self.address}
        if token:
            headers["authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        try:
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            return 0, b""


class Load:
    """WORKERS threads, each with its own users, calling as fast as answers come."""

    def __init__(
        self, port: int, users: list[SignedUpUser], creators: list[SignedUpUser], videos: list[str]
    ) -> None:
        self.port, self.creators, self.videos = port, creators, videos
        self.groups = [users[i::WORKERS] for i in range(WORKERS)]
        self.ledgers = [Ledger() for _ in range(WORKERS)]
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(WORKERS)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def since(self, start: float) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.at >= start]

    def _record(self, op: str, status: int, started: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.calls.append(Call(now, op, status, now - started))

    def _run(self, n: int) -> None:
        rng = random.Random(n)  # noqa: S311 - a load pattern, not a secret
        client = Client(self.port, f"10.9.{n}.1")
        ledger, users = self.ledgers[n], self.groups[n]
        ops: list[tuple[int, Callable[[], None]]] = []

        def read(op: str, path: str, token: str | None = None) -> None:
            started = time.monotonic()
            status, _ = client.call("GET", path, token=token)
            self._record(op, status, started)

        def toggle(op: str, kind: dict, key: tuple[str, str], create: tuple, delete: str) -> None:
            want = not kind.get(key)
            started = time.monotonic()
            status, _ = (
                client.call("POST", create[0], create[1], token=create[2])
                if want
                else client.call("DELETE", delete, token=create[2])
            )
            self._record(f"{op}.{'create' if want else 'delete'}", status, started)
            kind[key] = (
                want if status == 200 else None if status == 0 or status >= 500 else kind.get(key)
            )

        def like() -> None:
            user, video = rng.choice(users), rng.choice(self.videos)
            create = ("/v1/likes", {"video_id": video}, user.token)
            toggle("like", ledger.likes, (user.user_id, video), create, f"/v1/likes/{video}")

        def follow() -> None:
            user, creator = rng.choice(users), rng.choice(self.creators)
            create = ("/v1/follows", {"followee_id": creator.user_id}, user.token)
            delete = f"/v1/follows/{creator.user_id}"
            toggle("follow", ledger.follows, (user.user_id, creator.user_id), create, delete)

        def comment() -> None:
            user, video = rng.choice(users), rng.choice(self.videos)
            path = f"/v1/videos/{video}/comments"
            started = time.monotonic()
            status, body = client.call("POST", path, {"text": "under load"}, token=user.token)
            self._record("comment.create", status, started)
            if status == 200:
                ledger.comments.add(json.loads(body)["comment_id"])

        def play() -> None:
            video = rng.choice(self.videos)
            body = {"views": [{"video_id": video, "watched_ms": 1500, "completed": False}]}
            started = time.monotonic()
            status, _ = client.call("POST", "/v1/views", body)  # anonymous: never deduplicated
            self._record("views.record", status, started)
            if status == 200:
                ledger.plays[video] += 1
            elif status == 0 or status >= 500:
                ledger.unknown_plays[video] += 1

        ops = [
            (6, lambda: read("feed.following", "/v1/feed?kind=following", rng.choice(users).token)),
            (4, lambda: read("feed.for_you", "/v1/feed?kind=for_you")),
            (3, lambda: read("video.get", f"/v1/videos/{rng.choice(self.videos)}")),
            (3, lambda: read("user.get", f"/v1/users/{rng.choice(self.creators).user_id}")),
            (2, lambda: read("comments.list", f"/v1/videos/{rng.choice(self.videos)}/comments")),
            (
                2,
                lambda: read(
                    "followers.list", f"/v1/users/{rng.choice(self.creators).user_id}/followers"
                ),
            ),
            (3, like),
            (2, follow),
            (1, comment),
            (2, play),
        ]
        weights = [w for w, _ in ops]
        while not self.stopping.is_set():
            rng.choices(ops, weights)[0][1]()


# --- faults -------------------------------------------------------------------------------


def proc_named(stack: Stack, name: str) -> Proc:
    return next(p for layer in stack.layers for p in layer if p.name == name)


def valkeys(stack: Stack) -> list[Proc]:
    """The Valkey node, or the cluster's three."""
    return [p for layer in stack.layers for p in layer if p.name.startswith("valkey")]


def down(proc: Proc, ready: Callable[[], bool], seconds: float = DOWN_SECONDS) -> None:
    """``proc`` stopped (its own stop signal) for ``seconds``, then started again."""
    proc.send(proc.stop_signal)
    if not proc.wait(15):
        proc.kill()
    time.sleep(seconds)
    proc.start()
    proc.wait_ready(ready, 60)


def kill_one(stack: Stack, service: str) -> None:
    inst = stack.topo.instances_of(service)[0]
    stack.services[inst.name].send(signal.SIGKILL)
    stack.services[inst.name].wait(5)
    time.sleep(DOWN_SECONDS / 2)  # the other instance carries the load meanwhile
    stack.restart_service(inst.name)


def rolling_restart_all(stack: Stack) -> None:
    for service in SERVICES:
        stack.rolling_restart(service)


def primary_down(stack: Stack) -> None:
    url = stack.settings.database_url
    down(proc_named(stack, "postgres"), lambda: postgres_ready(url))


def replica_down(stack: Stack) -> None:
    url = stack.settings.database_replica_url
    down(proc_named(stack, "postgres-replica"), lambda: postgres_ready(url))


def valkey_flushed(stack: Stack) -> None:
    client = _valkey(stack)
    client.flushall()
    client.close()


def valkey_down(stack: Stack) -> None:
    for proc in valkeys(stack):
        proc.send(proc.stop_signal)
        proc.wait(15)
    time.sleep(DOWN_SECONDS)
    for proc in valkeys(stack):
        proc.start()
    client = _valkey(stack)
    valkeys(stack)[0].wait_ready(lambda: bool(client.ping()), 60)
    client.close()


def storage_down(stack: Stack) -> None:
    endpoint = stack.settings.s3_endpoint
    down(proc_named(stack, "seaweedfs"), lambda: s3_ready(endpoint))


def _valkey(stack: Stack) -> redis.Redis:
    if stack.settings.redis_cluster:
        return redis.RedisCluster.from_url(stack.settings.redis_url)  # type: ignore[return-value]
    return redis.Redis.from_url(stack.settings.redis_url)


FAULTS: list[tuple[str, Callable[[Stack], None]]] = [
    *[(f"SIGKILL one of two {s}_svc", lambda st, s=s: kill_one(st, s)) for s in SERVICES],
    ("rolling restart of every service", rolling_restart_all),
    ("Postgres primary down 10 s", primary_down),
    ("replica down 10 s", replica_down),
    ("Valkey flushed", valkey_flushed),
    ("Valkey down 10 s", valkey_down),
    ("SeaweedFS down 10 s", storage_down),
]


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    # durable, as make run: "acknowledged" must mean on disk
    run_on_own_stack("faults", run, LOAD_ENV, INSTANCES, durable=True)


def chosen() -> list[tuple[str, Callable[[Stack], None]]]:
    """FAULTS=word,word runs only the faults whose names contain one of them."""
    words = [w.strip().lower() for w in os.environ.get("FAULTS", "").split(",") if w.strip()]
    return [f for f in FAULTS if not words or any(w in f[0].lower() for w in words)]


def run(stack: Stack) -> dict:
    port = stack.topo.edge_port
    http = Http(port)
    creators = sign_up_many(port, CREATORS, "creator")
    videos = [publish(http, c)["video_id"] for c in creators for _ in range(2)]
    users = sign_up_many(port, WORKERS * USERS_PER_WORKER, "fan")
    canary = sign_up_many(port, 1, "canary")[0]
    # its own video: the load's likes would move the count the canary waits for
    canary_video = publish(http, creators[0])["video_id"]
    load = Load(port, users, creators, videos)
    load.start()
    rows = []
    try:
        for name, inject in chosen():
            time.sleep(SETTLE_SECONDS)
            started = time.monotonic()
            print(f"{name} ...", flush=True)
            inject(stack)
            healed = time.monotonic()
            recovered = wait_recovered(load, http, canary, canary_video, healed)
            calls = [c for c in load.since(started) if c.at <= healed + recovered]
            rows.append(summary(name, calls, healed - started, recovered))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        load.stop()
    lost = check_acknowledged(stack, http, load)
    http.close()
    print(table(rows, lost))
    return {"faults": rows, "acknowledged_writes": lost}


def summary(name: str, calls: list[Call], fault_seconds: float, recovered: float) -> dict:
    def by(attr: Callable[[Call], str], which: list[Call]) -> dict[str, int]:
        return dict(collections.Counter(attr(c) for c in which))

    reads = [c for c in calls if not c.write]
    writes = [c for c in calls if c.write]
    failed_writes = [c for c in writes if c.failed]
    return {
        "fault": name,
        "calls": len(calls),
        "reads": len(reads),
        "writes": len(writes),
        "reads_failed": by(lambda c: str(c.status), [c for c in reads if c.failed]),
        "writes_failed": by(lambda c: str(c.status), failed_writes),
        "failed_by_op": by(lambda c: c.op, [c for c in calls if c.failed]),
        "slowest_failed_write_s": round(max((c.took for c in failed_writes), default=0), 2),
        "fault_seconds": round(fault_seconds, 1),
        "recovery_seconds": round(recovered, 1),
    }


def wait_recovered(
    load: Load, http: Http, canary: SignedUpUser, video: str, healed: float
) -> float:
    """Seconds from ``healed`` until no client call has failed for QUIET_SECONDS and a canary
    like (then unlike) is counted: requests answer and events flow again."""
    deadline = healed + RECOVERY_LIMIT
    liked = _like_count(http, video)
    want = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        failures = [c for c in load.since(now - QUIET_SECONDS) if c.failed]
        if want is None:
            status = http.post("/v1/likes", {"video_id": video}, token=canary.token).status
            if status == 200:
                want = (liked or 0) + 1
        elif (
            _like_count(http, video) is not None
            and _like_count(http, video) >= want
            and not failures
        ):
            http.request("DELETE", f"/v1/likes/{video}", token=canary.token)
            return time.monotonic() - healed
        time.sleep(0.05)
    return RECOVERY_LIMIT


def _like_count(http: Http, video: str) -> int | None:
    r = http.get(f"/v1/videos/{video}")
    return int(r.json()["like_count"]) if r.status == 200 else None


def check_acknowledged(stack: Stack, http: Http, load: Load) -> dict:
    """Every acknowledged write against the database (and the plays against the counts, once
    the consumers have caught up and the reconciler has run)."""
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        likes = set(conn.execute("SELECT user_id::text, video_id::text FROM activity.likes"))
        follows = set(
            conn.execute("SELECT follower_id::text, followee_id::text FROM activity.follows")
        )
        comments = {r[0] for r in conn.execute("SELECT comment_id::text FROM activity.comments")}
    lost = collections.Counter()
    checked = collections.Counter()
    for ledger in load.ledgers:
        for kind, told, rows in (
            ("likes", ledger.likes, likes),
            ("follows", ledger.follows, follows),
        ):
            for pair, state in told.items():
                if state is None:
                    continue
                checked[kind] += 1
                lost[kind] += (pair in rows) != state
        checked["comments"] += len(ledger.comments)
        lost["comments"] += len(ledger.comments - comments)
    plays = sum((ledger.plays for ledger in load.ledgers), collections.Counter())
    unknown = sum((ledger.unknown_plays for ledger in load.ledgers), collections.Counter())

    def counted() -> dict[str, int]:
        return {v: int(http.get(f"/v1/videos/{v}").json()["view_count"]) for v in plays}

    deadline = time.monotonic() + 60
    seen = counted()
    while time.monotonic() < deadline and any(seen[v] < n for v, n in plays.items()):
        time.sleep(0.5)
        seen = counted()
    checked["plays"] = sum(plays.values())
    lost["plays"] = sum(max(0, n - seen[v]) for v, n in plays.items())
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        stored = dict(
            conn.execute(
                "SELECT video_id::text, view_count FROM activity.video_counters"
                " WHERE video_id = ANY(%s::uuid[])",
                [list(plays)],
            ).fetchall()
        )
    # the counters' rows, not what GET /v1/videos shows (the Redis mirror): where a loss is
    lost["plays_in_counters"] = sum(max(0, n - stored.get(v, 0)) for v, n in plays.items())
    extra = sum(max(0, seen[v] - n - unknown[v]) for v, n in plays.items())
    return {"checked": dict(checked), "lost": dict(lost), "plays_counted_twice": extra}


def table(rows: list[dict], lost: dict) -> str:
    def statuses(counts: dict[str, int]) -> str:
        return ", ".join(f"{n}× {s}" for s, n in sorted(counts.items())) or "0"

    lines = [
        "| fault, under load | calls (reads / writes) | reads failed | writes failed"
        " (slowest) | recovery |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        slowest = f" ({r['slowest_failed_write_s']} s)" if r["writes_failed"] else ""
        lines.append(
            f"| {r['fault']} | {r['calls']} ({r['reads']} / {r['writes']}) |"
            f" {statuses(r['reads_failed'])} | {statuses(r['writes_failed'])}{slowest} |"
            f" {r['recovery_seconds']} s |"
        )
    lines.append("")
    lines.append(f"acknowledged writes checked: {lost['checked']}; lost: {lost['lost']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
