"""Video clips made at test time with PyAV (no binaries in git)."""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction

import av


def make_clip(
    seconds: float, *, width: int = 160, height: int = 120, fps: int = 10, fmt: str = "mp4",
    codec: str | None = None,
) -> bytes:  # fmt: skip
    """An H.264 MP4 (or VP9 WebM) of shifting gradients, ``seconds`` long."""
    codec = codec or ("libvpx-vp9" if fmt == "webm" else "libx264")
    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
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
    return out.getvalue()


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
