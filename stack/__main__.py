"""python -m stack run: the whole mesh on embedded servers, until Ctrl-C or SIGTERM.

python -m stack run [--data-dir .data] [--instances activity=2 --instances feed=2]
INSTANCES=2 python -m stack run    # every service twice (make run INSTANCES=2)
python -m stack rotate-jwt-key [--data-dir .data]: a new signing key; restart to use it
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from mesh.jwtkeys import rotate_signing_key
from mesh.settings import SERVICES_BY_NAME, Settings
from stack.launcher import Stack
from stack.procs import ProcessFailed
from stack.topology import Topology

BANNER = """
The mesh is up.
  edge (REST + gRPC)     http://127.0.0.1:{edge}
  internal (gRPC only)   127.0.0.1:{internal}
  media edge (CDN)       http://127.0.0.1:{media}/media/   player: http://127.0.0.1:{media}/player/?hls=<hls_url>
  services               {services}
  Envoy admin            http://127.0.0.1:{edge_admin} (edge), http://127.0.0.1:{internal_admin} (internal)
  state                  {data}    logs: {data}/logs/

Try it:
  curl -s -XPOST localhost:{edge}/v1/users -d '{{"handle":"ana","password":"correct horse","display_name":"Ana"}}'
  curl -s -XPOST localhost:{edge}/v1/sessions -d '{{"handle":"ana","password":"correct horse"}}'
  curl -s localhost:{edge}/v1/users/<user_id>
  .venv/bin/grpcurl -cacert {data}/pki/ca.pem -cert {data}/pki/developer.pem \\
      -key {data}/pki/developer-key.pem localhost:{activity} list
  .venv/bin/grpcurl -plaintext -import-path protos -proto tiktok/v1/activity.proto \\
      -d '{{"handle":"ana","password":"correct horse"}}' localhost:{edge} tiktok.v1.ActivityService/CreateSession

Ctrl-C stops everything.
"""


def parse_counts(pairs: list[str], every: str = "") -> dict[str, int]:
    """Instances per service: ``every`` (``INSTANCES``: N for every service, or the same
    ``service=N,...`` list), then each ``--instances service=N``."""
    counts: dict[str, int] = {}
    if every.strip().isdigit():
        counts = {name: int(every) for name in SERVICES_BY_NAME}
        if int(every) < 1:
            raise SystemExit(f"INSTANCES wants N >= 1, got {every!r}")
    elif every.strip():
        pairs = [p.strip() for p in every.split(",") if p.strip()] + pairs
    for pair in pairs:
        name, _, n = pair.partition("=")
        if name not in SERVICES_BY_NAME:
            raise SystemExit(
                f"--instances: unknown service {name!r}; one of {list(SERVICES_BY_NAME)}"
            )
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--instances wants service=N with N >= 1, got {pair!r}")
        counts[name] = int(n)
    return counts


def run(args: argparse.Namespace) -> int:
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    topo = Topology.local(
        Path(args.data_dir).resolve(), parse_counts(args.instances, os.environ.get("INSTANCES", ""))
    )
    print(f"starting the mesh (state in {topo.data_dir})", flush=True)
    stack = Stack(topo, os.environ, durable=True, progress=lambda line: print(line, flush=True))
    try:
        stack.start()
    except ProcessFailed as e:
        print(f"\nstart failed: {e}", file=sys.stderr)
        return 1
    if stopping:  # a signal arrived while starting
        stack.stop()
        return 0
    print(
        BANNER.format(
            edge=topo.edge_port,
            internal=topo.internal_port,
            media=topo.media_port,
            edge_admin=topo.edge_admin_port,
            internal_admin=topo.internal_admin_port,
            services=", ".join(f"{i.name}:{i.grpc_port}" for i in topo.instances),
            activity=topo.instances_of("activity")[0].grpc_port,
            data=topo.data_dir,
        ),
        flush=True,
    )
    reported: set[str] = set()
    control = control_dir(topo.data_dir)
    control.mkdir(parents=True, exist_ok=True)
    for stale in control.glob("restart-*"):
        stale.unlink()  # asked of a run that ended
    while not stopping:
        for request in sorted(control.glob("restart-*")):
            service = request.name.removeprefix("restart-")
            print(f"rolling restart of {service}", flush=True)
            stack.rolling_restart(service)
            reported -= {i.name for i in topo.instances_of(service)}
            request.unlink()  # done: `python -m stack restart` returns
        for proc in stack.dead():
            if proc.name not in reported:
                reported.add(proc.name)
                print(f"!! {proc.name} exited; last lines:\n{proc.log_tail(10)}", flush=True)
        time.sleep(0.2)
    print("\nstopping...", flush=True)
    t0 = time.monotonic()
    stack.stop()
    print(f"stopped in {time.monotonic() - t0:.1f}s", flush=True)
    return 0


def control_dir(data_dir: Path) -> Path:
    """Where ``restart`` leaves requests for the running ``run`` (which owns the processes)."""
    return data_dir / "control"


def restart(args: argparse.Namespace) -> int:
    """Asks the running mesh for a rolling restart of one service and waits until it is done."""
    if args.service not in SERVICES_BY_NAME:
        raise SystemExit(f"unknown service {args.service!r}; one of {list(SERVICES_BY_NAME)}")
    control = control_dir(Path(args.data_dir).resolve())
    if not control.is_dir():
        raise SystemExit(f"no mesh is running on {args.data_dir} (start it with `make run`)")
    request = control / f"restart-{args.service}"
    request.touch()
    deadline = time.monotonic() + args.timeout
    while request.exists():
        if time.monotonic() > deadline:
            request.unlink(missing_ok=True)
            raise SystemExit(f"the mesh did not restart {args.service} within {args.timeout} s")
        time.sleep(0.2)
    print(f"{args.service}: every instance replaced, one at a time", flush=True)
    return 0


def rotate_jwt_key(args: argparse.Namespace) -> int:
    env = dict(os.environ, DATA_DIR=args.data_dir)
    settings = Settings.from_env(env)
    if not settings.jwt_private_key_file.exists():
        raise SystemExit(f"no signing key at {settings.jwt_private_key_file}: nothing to rotate")
    kid = rotate_signing_key(settings.jwt_private_key_file, settings.jwt_previous_key_file)
    print(
        f"new signing key {kid} in {settings.jwt_private_key_file}; the old one is now"
        f" {settings.jwt_previous_key_file}.\nRestart the mesh (make run): new tokens are signed"
        " with the new key, and tokens signed with the old one stay valid until they expire.",
        flush=True,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the whole mesh on embedded servers")
    run_p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", ".data"))
    run_p.add_argument(
        "--instances", action="append", default=[], metavar="SERVICE=N",
        help="instances of a service (default 1 each), e.g. activity=2",
    )  # fmt: skip
    rotate_p = sub.add_parser("rotate-jwt-key", help="make a new access-token signing key")
    rotate_p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", ".data"))
    restart_p = sub.add_parser("restart", help="rolling restart of one service of the running mesh")
    restart_p.add_argument("service", help=f"one of {', '.join(SERVICES_BY_NAME)}")
    restart_p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", ".data"))
    restart_p.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    commands = {"run": run, "rotate-jwt-key": rotate_jwt_key, "restart": restart}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
