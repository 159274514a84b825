"""Probing uploaded videos and making thumbnails, without loading a file into memory.

``S3RangeReader`` is a seekable, read-only file over an object, fetched in ranged GETs of one
block at a time with a small cache, so probing a 64 MiB MP4 (whose index may sit at the end)
touches only the blocks FFmpeg reads. Everything here is blocking: call it in a worker thread.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av
import botocore.exceptions

from upload_svc import rules

log = logging.getLogger("upload_svc.media")

BLOCK_BYTES = 512 * 1024
CACHED_BLOCKS = 8  # at most 4 MiB of an object in memory per probe
THUMBNAIL_WIDTH = 360


# botocore's timeouts subclass OSError; PyAV re-raises what the read callback raised
STORAGE_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class RejectedMedia(Exception):
    """The bytes are not an acceptable video; the message says why, for the client."""


class S3RangeReader(io.RawIOBase):
    """A read-only, seekable view of one S3 object, read in blocks by ranged GETs."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, etag: str) -> None:
        super().__init__()
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.etag = etag  # every block must come from the version that was HEADed
        self.position = 0
        self.blocks: OrderedDict[int, bytes] = OrderedDict()
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, index: int) -> bytes:
        if index in self.blocks:
            self.blocks.move_to_end(index)
            return self.blocks[index]
        start = index * BLOCK_BYTES
        end = min(start + BLOCK_BYTES, self.size) - 1
        reply = self.client.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}", IfMatch=self.etag
        )
        data = reply["Body"].read()
        self.requests += 1
        self.blocks[index] = data
        if len(self.blocks) > CACHED_BLOCKS:
            self.blocks.popitem(last=False)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self.size - self.position)
        done = 0
        while done < wanted:
            index, offset = divmod(self.position, BLOCK_BYTES)
            chunk = self._block(index)[offset : offset + wanted - done]
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self.position += len(chunk)
        return done


@dataclass(frozen=True)
class ProbeResult:
    format_name: str
    duration_ms: int
    width: int
    height: int
    thumbnail_jpeg: bytes


def probe_video(source: BinaryIO | io.RawIOBase, content_type: str) -> ProbeResult:
    """Checks that ``source`` is a real video of the declared type and at most 60 s long, and
    makes a JPEG thumbnail from its first frame. Raises RejectedMedia with a client message."""
    try:
        container = av.open(source, mode="r", options={"probesize": "5000000"})
    except STORAGE_ERRORS:
        raise  # storage failed, not the file: UNAVAILABLE, and the upload stays retryable
    except (av.FFmpegError, ValueError, OSError) as e:
        raise RejectedMedia(
            f"the uploaded file is not a video we can read ({e.__class__.__name__})"
        ) from None
    with container:
        format_name = container.format.name
        if not rules.container_matches(content_type, format_name):
            raise RejectedMedia(
                f"the uploaded file is {format_name.split(',')[0]}, not {content_type}"
            )
        if not container.streams.video:
            raise RejectedMedia("the uploaded file has no video stream")
        stream = container.streams.video[0]
        duration_ms = _duration_ms(container, stream)
        if duration_ms is None or duration_ms <= 0:
            raise RejectedMedia("the uploaded file has no measurable duration")
        if duration_ms > rules.MAX_DURATION_MS + rules.DURATION_TOLERANCE_MS:
            raise RejectedMedia(f"the video is {duration_ms / 1000:.1f} s long; the limit is 60 s")
        try:
            frame = next(container.decode(stream))
        except STORAGE_ERRORS:
            raise
        except (StopIteration, av.FFmpegError, OSError):
            raise RejectedMedia("the video stream has no decodable frame") from None
        if frame.width < 16 or frame.height < 16:
            raise RejectedMedia(f"the video is {frame.width}x{frame.height}; at least 16x16")
        width, height = (
            stream.codec_context.width or frame.width,
            stream.codec_context.height or frame.height,
        )
        return ProbeResult(format_name, duration_ms, width, height, _jpeg(frame))


def _duration_ms(container: Any, stream: Any) -> int | None:
    if container.duration:  # in AV_TIME_BASE (microseconds)
        return int(container.duration / 1000)
    if stream.duration and stream.time_base:
        return int(stream.duration * stream.time_base * 1000)
    return None


def _jpeg(frame: Any) -> bytes:
    """The frame scaled to THUMBNAIL_WIDTH (even dimensions) and encoded as a baseline JPEG."""
    width = min(THUMBNAIL_WIDTH, frame.width) // 2 * 2
    height = max(2, round(frame.height * width / frame.width) // 2 * 2)
    scaled = frame.reformat(width=width, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qscale": "4"}
    scaled.pts = 0
    packets = list(encoder.encode(scaled)) + list(encoder.encode(None))
    return b"".join(bytes(p) for p in packets)
