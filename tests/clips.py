"""Video clips made at test time with PyAV (no binaries in git)."""

from __future__ import annotations

import io
import math
import struct
import zlib
from fractions import Fraction

import av


def make_clip(
    seconds: float, *, width: int = 160, height: int = 120, fps: int = 10, fmt: str = "mp4",
    codec: str | None = None, audio: bool = False,
) -> bytes:  # fmt: skip
    """An H.264 MP4 (or VP9 WebM) of shifting gradients, ``seconds`` long; with ``audio``, an
    AAC track of a quiet tone as well."""
    codec = codec or ("libvpx-vp9" if fmt == "webm" else "libx264")
    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        tone = container.add_stream("aac", rate=44100) if audio else None
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, value in zip(
                frame.planes, (i * 7 % 256, 64 + i % 128, 192 - i % 128), strict=True
            ):
                row = bytes((value + x) % 256 for x in range(plane.line_size))
                plane.update(row * (plane.buffer_size // plane.line_size))
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if tone is not None:
            _mux_tone(container, tone, seconds)
    return out.getvalue()


def _mux_tone(
    container: av.container.OutputContainer, stream: av.AudioStream, seconds: float
) -> None:
    rate, samples = 44100, 1024
    period = [int(1000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(samples)]
    chunk = struct.pack(f"<{samples}h", *period)
    for n in range(int(seconds * rate / samples)):
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(chunk)
        frame.sample_rate, frame.pts = rate, n * samples
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_png(width: int = 8, height: int = 8) -> bytes:
    """A valid PNG image (to be mislabelled as video/mp4)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
