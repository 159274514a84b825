"""HLS renditions as a player meets them: a published clip becomes READY with a master playlist
whose variants parse, whose segments all answer through the media edge and decode at the
advertised size; state and hls_url everywhere a video appears; restarts and unreadable sources."""

from __future__ import annotations

import io
import re
import urllib.parse
from dataclasses import dataclass

import av
import psycopg

from mesh.clients import s3_client
from stack.launcher import Stack
from tests.clips import make_clip
from tests.helpers import Http, eventually, sign_up
from tests.videos import FAILED, PROCESSING, READY, fetch, portrait_clip, publish, ready


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    width: int
    height: int
    codecs: str


def parse_master(text: str, base: str) -> list[Variant]:
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    variants = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1]))
            width, height = (int(n) for n in attrs["RESOLUTION"].split("x"))
            variants.append(
                Variant(
                    urllib.parse.urljoin(base, lines[i + 1]),
                    int(attrs["BANDWIDTH"]),
                    width,
                    height,
                    attrs["CODECS"].strip('"'),
                )
            )
    return variants


def parse_variant(text: str, base: str) -> list[tuple[float, str]]:
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and "#EXT-X-ENDLIST" in lines
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines
    target = next(int(x.split(":")[1]) for x in lines if x.startswith("#EXT-X-TARGETDURATION:"))
    assert target <= 4
    segments = []
    for i, line in enumerate(lines):
        if line.startswith("#EXTINF:"):
            segments.append(
                (float(line[8:].split(",")[0]), urllib.parse.urljoin(base, lines[i + 1]))
            )
    return segments


def test_a_published_clip_is_processing_then_ready_with_a_playable_ladder(edge: Http) -> None:
    user = sign_up(edge)
    video = publish(edge, user, portrait_clip())
    assert video["state"] == PROCESSING and video["hls_url"] == ""
    done = ready(edge, video["video_id"])
    assert done["hls_url"].endswith("/master.m3u8") and "/media/h/" in done["hls_url"]
    assert done["playback_url"] == video["playback_url"]  # the original stays

    status, headers, body = fetch(done["hls_url"])
    assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl"
    variants = parse_master(body.decode(), done["hls_url"])
    assert [(v.width, v.height) for v in variants] == [(240, 426), (360, 640)]
    assert all(v.codecs.startswith("avc1.") and "mp4a.40.2" in v.codecs for v in variants)
    assert variants[0].bandwidth < variants[1].bandwidth
    for variant in variants:
        status, _, text = fetch(variant.uri)
        assert status == 200
        segments = parse_variant(text.decode(), variant.uri)
        assert abs(sum(d for d, _ in segments) - 5.0) < 0.2
        assert all(d <= 4.0 for d, _ in segments)
        for _, uri in segments:
            status, headers, data = fetch(uri)
            assert status == 200 and headers["content-type"] == "video/mp2t" and data
        # a variant decodes at its advertised resolution
        _, _, first = fetch(segments[0][1])
        with av.open(io.BytesIO(first), format="mpegts") as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (variant.width, variant.height)
            assert container.streams.audio  # the source had sound


def test_renditions_never_upscale_a_small_source(edge: Http) -> None:
    video = publish(edge, sign_up(edge), make_clip(2, width=160, height=120))  # shorter side 120
    done = ready(edge, video["video_id"])
    variants = parse_master(fetch(done["hls_url"])[2].decode(), done["hls_url"])
    assert [(v.width, v.height) for v in variants] == [(160, 120)]
    assert variants[0].codecs.startswith("avc1.") and "mp4a" not in variants[0].codecs


def test_state_and_hls_url_reach_lists_and_feeds(edge: Http) -> None:
    creator, fan = sign_up(edge, "creator"), sign_up(edge, "fan")
    assert edge.post("/v1/follows", {"followee_id": creator.user_id}, token=fan.token).status == 200
    video = publish(edge, creator)
    done = ready(edge, video["video_id"])
    assert edge.post("/v1/likes", {"video_id": video["video_id"]}, token=fan.token).status == 200

    def everywhere() -> bool:
        listed = edge.get(f"/v1/users/{creator.user_id}/videos").json()["videos"]
        liked = edge.get(f"/v1/users/{fan.user_id}/likes").json()["videos"]
        feed = edge.get("/v1/feed?kind=following", token=fan.token).json()["items"]
        seen = [v for v in listed + liked + feed if v["video_id"] == video["video_id"]]
        return len(seen) == 3 and all(
            (v["state"], v["hls_url"]) == (READY, done["hls_url"]) for v in seen
        )

    eventually(everywhere, timeout=10, interval=0.25)


def _job(stack: Stack, video_id: str) -> tuple | None:
    with psycopg.connect(stack.settings.database_url) as conn:
        return conn.execute(
            "SELECT leased_by, attempts FROM upload.transcode_jobs WHERE video_id = %s", [video_id]
        ).fetchone()


def test_a_restart_mid_transcode_still_ends_ready(edge: Http, stack: Stack) -> None:
    user = sign_up(edge)
    video = publish(edge, user, make_clip(20, width=720, height=1280, fps=30))
    eventually(lambda: (_job(stack, video["video_id"]) or (None,))[0] is not None, timeout=20)
    stack.services["upload_svc-0"].kill()  # SIGKILL while ffmpeg runs
    stack.restart_service("upload_svc-0")
    done = ready(edge, video["video_id"], timeout=120)
    variants = parse_master(fetch(done["hls_url"])[2].decode(), done["hls_url"])
    assert [v.height for v in variants] == [426, 640, 960, 1280]
    assert _job(stack, video["video_id"]) is None


def test_a_source_the_transcoder_cannot_read_ends_failed_and_stays_playable(
    edge: Http, stack: Stack
) -> None:
    user = sign_up(edge)
    video = publish(edge, user)
    ready(edge, video["video_id"])
    key = video["playback_url"].split("/media/", 1)[1]
    # the same video, its ladder to be built again, from a source that is now unreadable
    client = s3_client(stack.settings)
    original = client.get_object(Bucket=stack.settings.s3_bucket, Key=key)["Body"].read()
    client.put_object(Bucket=stack.settings.s3_bucket, Key=key, Body=b"\x00" * 4096)
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE upload.videos SET state = 'processing', hls_key = NULL WHERE video_id = %s",
            [video["video_id"]],
        )
        conn.execute(
            "INSERT INTO upload.transcode_jobs (video_id) VALUES (%s)", [video["video_id"]]
        )

    def failed() -> dict | None:
        got = edge.get(f"/v1/videos/{video['video_id']}").json()
        return got if got["state"] == FAILED else None

    got = eventually(failed, timeout=30, interval=0.25)
    assert got["hls_url"] == "" and got["playback_url"] == video["playback_url"]
    assert _job(stack, video["video_id"]) is None  # tried a bounded number of times, then left
    client.put_object(Bucket=stack.settings.s3_bucket, Key=key, Body=original)
    assert fetch(got["playback_url"])[0] == 200


def test_transcoding_is_measured(edge: Http, stack: Stack) -> None:
    ready(edge, publish(edge, sign_up(edge))["video_id"])
    metrics = Http(stack.topo.instances_of("upload")[0].metrics_port)
    try:
        text = metrics.get("/metrics").body.decode()
    finally:
        metrics.close()
    lines = text.splitlines()
    assert any(line.startswith('upload_transcode_jobs_total{outcome="ready"}') for line in lines)
    assert any(line.startswith("upload_transcode_seconds_count") for line in lines)
    assert any(line.startswith("upload_transcode_queue_depth") for line in lines)
