"""The media edge (nginx, the CDN stand-in): its config rendered from ``cdn/nginx.conf.j2`` and
the process that serves it.

nginx comes from the system (Debian's ``nginx-light``; ``make`` installs it when missing).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import sys
from pathlib import Path

import jinja2

from mesh.settings import Settings
from stack.procs import Proc, is_root
from stack.servers import s3_address
from stack.topology import HOST, Topology

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cdn" / "nginx.conf.j2"
PLAYER_DIR = ROOT / "cdn" / "player"
HLS_JS = ROOT / "cdn" / "node_modules" / "hls.js" / "dist" / "hls.min.js"
DOCS_DIR = ROOT / "cdn" / "docs"
WEB_DIR = ROOT / "web"
# the build without subtitles, alternate audio and DRM: what the web client plays, at 2/3 the size
HLS_LIGHT_JS = ROOT / "cdn" / "node_modules" / "hls.js" / "dist" / "hls.light.min.js"
SWAGGER_UI = ROOT / "cdn" / "node_modules" / "swagger-ui-dist"
# nginx's workers drop root for this user; it owns the cache directory
WORKER_USER = "nobody"
KEYS_ZONE_MB = 16  # ~130,000 cached objects' keys


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise FileNotFoundError("nginx is not installed: run `make run` (it installs nginx-light)")
    return found


def state_dir(topo: Topology) -> Path:
    return topo.data_dir / "media-edge"


def cache_dir(topo: Topology) -> Path:
    return state_dir(topo) / "cache"


def access_log(topo: Topology) -> Path:
    """One JSON line per request (cdn/nginx.conf.j2's ``edge`` format)."""
    return topo.data_dir / "logs" / "media-edge-access.log"


def render_media_edge_config(topo: Topology, settings: Settings) -> Path:
    """Writes ``<data>/media-edge/nginx.conf`` (and the directories it names); returns its path."""
    state, cache = state_dir(topo), cache_dir(topo)
    for d in (cache, state / "tmp", topo.data_dir / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    user = group = None
    if is_root():
        entry = pwd.getpwnam(WORKER_USER)
        user, group = entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name
        for d in (cache, state / "tmp"):
            shutil.chown(d, entry.pw_uid, entry.pw_gid)
    s3_host, s3_port = s3_address(settings.s3_endpoint)
    env = jinja2.Environment(  # noqa: S701 - renders an nginx config, not HTML
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    text = env.from_string(TEMPLATE.read_text()).render(
        host=HOST,
        port=topo.media_port,
        user=user,
        group=group,
        state_dir=state,
        cache_dir=cache,
        access_log=access_log(topo),
        max_bytes=settings.media_cache_max_bytes,
        keys_zone_mb=KEYS_ZONE_MB,
        revalidate_seconds=settings.media_cache_revalidate_seconds,
        s3_host=s3_host,
        s3_port=s3_port,
        bucket=settings.s3_bucket,
        player_dir=PLAYER_DIR,
        hls_js=HLS_JS,
        docs_dir=DOCS_DIR,
        swagger_ui=SWAGGER_UI,
        web_dir=WEB_DIR,
        hls_light_js=HLS_LIGHT_JS,
    )
    path = state / "nginx.conf"
    path.write_text(text)
    return path


def media_edge(topo: Topology, config: Path) -> Proc:
    state = config.parent
    return Proc(
        "media-edge",
        [
            nginx_binary(),
            "-c",
            str(config),
            "-p",
            str(state),
            "-e",
            str(topo.data_dir / "logs" / "media-edge-error.log"),
        ],
        topo.data_dir / "logs" / "media-edge.log",
        stop_signal=signal.SIGQUIT,  # graceful: finish the responses in flight
        stop_timeout=3,
    )


def media_metrics(topo: Topology) -> Proc:
    """The media edge's counters for Prometheus (``stack/media_metrics.py``)."""
    return Proc(
        "media-metrics",
        [sys.executable, "-m", "stack.media_metrics",
         "--log", str(access_log(topo)), "--cache-dir", str(cache_dir(topo)),
         "--port", str(topo.media_metrics_port), "--host", HOST],
        topo.data_dir / "logs" / "media-metrics.log",
        cwd=ROOT,
        stop_timeout=2,
    )  # fmt: skip
