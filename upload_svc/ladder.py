"""The HLS ladder of a video (DESIGN.md, "Media: renditions and the edge"), as pure functions:
which renditions a source gets, and the one ffmpeg command that builds them all.

Renditions are named by their shorter side (portrait clips are the norm), never larger than the
source in either dimension, H.264 Main with AAC audio when the source has sound. Keyframes are
forced every 2 s in every rendition at the same source times, so segments (2 s, cut at those
keyframes) line up across renditions and a player can switch between them at any boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# (shorter side, video kbit/s): bitrates for ~30 fps short-form video
RUNGS: tuple[tuple[int, int], ...] = (
    (240, 400),
    (360, 800),
    (540, 1500),
    (720, 2500),
    (1080, 4500),
)
SEGMENT_SECONDS = 2
MAX_FPS = 30
AUDIO_KBPS = 96
MASTER_PLAYLIST = "master.m3u8"
VARIANT_PLAYLIST = "index.m3u8"

CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}


@dataclass(frozen=True)
class Source:
    """What the transcoder needs to know of the original (from a probe of the local file)."""

    width: int
    height: int
    fps: float
    has_audio: bool


@dataclass(frozen=True)
class Rendition:
    name: str  # the shorter side, e.g. "360": also the folder of its playlist and segments
    width: int
    height: int
    video_kbps: int


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def plan_ladder(width: int, height: int) -> list[Rendition]:
    """The renditions of a ``width`` × ``height`` source, smallest first.

    Every rung up to the source's shorter side; a source smaller than the lowest rung gets one
    rendition at its own size. Sizes are even (H.264 with 4:2:0 chroma needs that) and never
    exceed the source's.
    """
    short, long_ = min(width, height), max(width, height)
    rungs = [(side, kbps) for side, kbps in RUNGS if side <= short]
    if not rungs:
        side = _even(short)
        rungs = [(side, max(100, RUNGS[0][1] * side * side // (RUNGS[0][0] ** 2)))]
    ladder = []
    for side, kbps in rungs:
        short_px = min(_even(side), _even(short))
        long_px = min(_even(long_ * side / short + 1), _even(long_))
        w, h = (short_px, long_px) if width <= height else (long_px, short_px)
        ladder.append(Rendition(str(side), w, h, kbps))
    return ladder


def ffmpeg_argv(
    ffmpeg: str, source_path: Path, out_dir: Path, source: Source, ladder: list[Rendition]
) -> list[str]:
    """One ffmpeg run: decode once, scale to every rendition, encode, and write the HLS tree
    ``out_dir/master.m3u8`` + ``out_dir/<name>/index.m3u8`` + ``out_dir/<name>/seg_NNN.ts``."""
    n = len(ladder)
    fps = f"fps={MAX_FPS}," if source.fps > MAX_FPS + 0.5 else ""
    graph = f"[0:v]{fps}split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";"
    graph += ";".join(
        f"[s{i}]scale={r.width}:{r.height}:flags=bicubic,setsar=1[v{i}]"
        for i, r in enumerate(ladder)
    )
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    argv += ["-i", str(source_path), "-filter_complex", graph]
    for i in range(n):
        argv += ["-map", f"[v{i}]"]
        if source.has_audio:
            argv += ["-map", "0:a:0"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p"]
    argv += ["-sc_threshold", "0", "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})"]
    for i, r in enumerate(ladder):
        argv += [
            f"-b:v:{i}", f"{r.video_kbps}k",
            f"-maxrate:v:{i}", f"{r.video_kbps * 11 // 10}k",
            f"-bufsize:v:{i}", f"{r.video_kbps * 2}k",
        ]  # fmt: skip
    if source.has_audio:
        argv += ["-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2"]
    streams = " ".join(
        f"v:{i}" + (f",a:{i}" if source.has_audio else "") + f",name:{r.name}"
        for i, r in enumerate(ladder)
    )
    argv += [
        "-f", "hls",
        "-hls_time", str(SEGMENT_SECONDS),
        "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments",
        "-hls_segment_type", "mpegts",
        "-hls_segment_filename", str(out_dir / "%v" / "seg_%03d.ts"),
        "-master_pl_name", MASTER_PLAYLIST,
        "-var_stream_map", streams,
        str(out_dir / "%v" / VARIANT_PLAYLIST),
    ]  # fmt: skip
    return argv


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix, "application/octet-stream")
