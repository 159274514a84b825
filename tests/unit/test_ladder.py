"""The HLS ladder's rules: renditions by the shorter side, never upscaled, even sizes, at least
two from 360 up, and one ffmpeg command whose keyframes line the renditions up."""

from __future__ import annotations

from pathlib import Path

import pytest

from upload_svc.ladder import Source, ffmpeg_argv, plan_ladder


@pytest.mark.parametrize(
    ("width", "height", "sizes"),
    [
        (720, 1280, [(240, 426), (360, 640), (540, 960), (720, 1280)]),  # portrait 720p
        (1080, 1920, [(240, 426), (360, 640), (540, 960), (720, 1280), (1080, 1920)]),
        (1920, 1080, [(426, 240), (640, 360), (960, 540), (1280, 720), (1920, 1080)]),
        (360, 640, [(240, 426), (360, 640)]),  # 360: at least two
        (300, 500, [(240, 400)]),
        (160, 120, [(160, 120)]),  # smaller than the lowest rung: its own size, not upscaled
        (161, 121, [(160, 120)]),  # odd sizes are made even, downwards
        (2160, 3840, [(240, 426), (360, 640), (540, 960), (720, 1280), (1080, 1920)]),
    ],
)
def test_renditions_follow_the_shorter_side_and_never_upscale(
    width: int, height: int, sizes: list[tuple[int, int]]
) -> None:
    ladder = plan_ladder(width, height)
    assert [(r.width, r.height) for r in ladder] == sizes
    for r in ladder:
        assert r.width <= width and r.height <= height
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.name == str(min(r.width, r.height))
    assert [r.video_kbps for r in ladder] == sorted(r.video_kbps for r in ladder)


def test_one_ffmpeg_run_builds_every_rendition_with_aligned_keyframes() -> None:
    source = Source(width=720, height=1280, fps=60, has_audio=True)
    argv = ffmpeg_argv("ffmpeg", Path("/in"), Path("/out"), source, plan_ladder(720, 1280))
    joined = " ".join(argv)
    assert "fps=30," in joined  # capped frame rate
    assert "-force_key_frames expr:gte(t,n_forced*2)" in joined and "-sc_threshold 0" in joined
    assert "-hls_playlist_type vod" in joined and "-master_pl_name master.m3u8" in joined
    streams = argv[argv.index("-var_stream_map") + 1]
    assert streams == "v:0,a:0,name:240 v:1,a:1,name:360 v:2,a:2,name:540 v:3,a:3,name:720"
    silent = ffmpeg_argv("ffmpeg", Path("/in"), Path("/out"), Source(160, 120, 25, False),
                         plan_ladder(160, 120))  # fmt: skip
    assert "-c:a" not in silent and "fps=" not in " ".join(silent)
    assert silent[silent.index("-var_stream_map") + 1] == "v:0,name:120"
