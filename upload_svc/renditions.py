"""The rendition worker: takes transcode jobs from Postgres, builds each video's HLS ladder with
ffmpeg, puts it under the video's own prefix, and marks the video READY (or FAILED).

Jobs are durable rows (``transcode_jobs``) leased to one worker at a time; the lease is renewed
while ffmpeg runs, so a worker that dies loses its jobs to the others within a lease, and the
same worker restarted takes its own back at once. The job's work is idempotent (the same keys
are written again), so a job that runs twice ends the same. ffmpeg runs at the lowest CPU
priority (SCHED_IDLE), a bounded number at a time, so transcoding never starves requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import av
import botocore.exceptions
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from mesh.interceptors import DEPENDENCY_ERRORS
from readmodels import objects
from upload_svc import ladder, store
from upload_svc.cards import Cards, video_message
from upload_svc.storage import Storage

log = logging.getLogger("upload_svc.renditions")
# what postpones a job without counting an attempt: storage or the database is unavailable
STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    *DEPENDENCY_ERRORS,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
)

LEASE_SECONDS = 30.0
POLL_SECONDS = 2.0
BACKOFF_SECONDS = 2.0  # doubled per attempt
STORAGE_RETRY_SECONDS = 10.0
UPLOAD_THREADS = 8

QUEUE_DEPTH = Gauge("upload_transcode_queue_depth", "Videos waiting for (or in) transcoding.")
TRANSCODE_SECONDS = Histogram(
    "upload_transcode_seconds",
    "Wall time to build one video's ladder (download, ffmpeg, upload).",
    buckets=(1, 2, 5, 10, 20, 30, 60, 90, 120, 300),
)
TRANSCODE_RATIO = Histogram(
    "upload_transcode_time_per_clip_second",
    "Transcode wall time divided by the clip's duration.",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 4),
)
JOBS = Counter("upload_transcode_jobs_total", "Transcode attempts by outcome.", ["outcome"])


class Unreadable(Exception):
    """ffmpeg (or the probe) could not read the source: the file's fault, counted."""


class LeaseLost(Exception):
    """Another worker holds the job now (this one stalled past its lease)."""


def ffmpeg_binary() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _lowest_priority() -> list[str]:
    """Run a command only on CPU time nothing else wants (SCHED_IDLE), else at nice 19; and
    have the kernel kill it if this process dies (no orphaned ffmpeg after a crash)."""
    prefix = []
    if setpriv := shutil.which("setpriv"):
        prefix = [setpriv, "--pdeathsig", "KILL", "--"]
    if chrt := shutil.which("chrt"):
        return [*prefix, chrt, "--idle", "0"]
    return [*prefix, shutil.which("nice") or "nice", "-n", "19"]


def probe_source(path: Path) -> ladder.Source:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Unreadable("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 30
            return ladder.Source(
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=float(rate),
                has_audio=bool(container.streams.audio),
            )
    except (av.FFmpegError, OSError, ValueError) as e:
        raise Unreadable(f"the source cannot be read: {e.__class__.__name__}") from None


class RenditionWorker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        storage: Storage,
        cards: Cards,
        *,
        name: str,
        work_dir: Path,
        concurrency: int,
        max_attempts: int,
        wanted: asyncio.Event,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.cards = cards
        self.name = name  # stable per instance: a restart takes its own jobs back
        self.work_dir = work_dir
        self.slots = asyncio.Semaphore(concurrency)
        self.max_attempts = max_attempts
        self.wanted = wanted
        self.ffmpeg = ffmpeg_binary()
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)  # what a killed run left
        self.work_dir.mkdir(parents=True, exist_ok=True)
        await self._store(lambda conn: store.release_leases_of(conn, self.name))
        try:
            while True:
                await self.slots.acquire()
                try:
                    job = await self._claim()
                except BaseException:
                    self.slots.release()
                    raise
                if job is None:
                    self.slots.release()
                    await self._wait_for_work()
                    continue
                task = asyncio.create_task(self._run_job(job))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _claim(self) -> store.TranscodeJob | None:
        try:
            async with self.pool.connection() as conn:
                QUEUE_DEPTH.set(await store.transcode_queue_depth(conn))
                return await store.claim_transcode_job(conn, self.name, LEASE_SECONDS)
        except DEPENDENCY_ERRORS as e:
            log.warning("transcode jobs unreadable: %r", e)
            return None

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wanted.wait(), POLL_SECONDS)
        self.wanted.clear()

    async def _store(self, statement: Callable[[Any], Awaitable[Any]]) -> Any:
        async with self.pool.connection() as conn:
            return await statement(conn)

    async def _run_job(self, job: store.TranscodeJob) -> None:
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            JOBS.labels("lease_lost").inc()
            log.warning("transcode lease lost", extra={"video_id": str(job.video_id)})
        except Unreadable as e:
            await self._failed_attempt(job, str(e))
        except STORAGE_ERRORS as e:
            JOBS.labels("storage_unavailable").inc()
            log.warning("transcode postponed: %r", e, extra={"video_id": str(job.video_id)})
            await self._postpone(job, repr(e))
        except Exception as e:
            log.exception("transcode failed unexpectedly", extra={"video_id": str(job.video_id)})
            await self._failed_attempt(job, repr(e))
        finally:
            self.slots.release()

    async def _postpone(self, job: store.TranscodeJob, reason: str) -> None:
        """Gives the job back for later without counting the attempt (not the file's fault)."""
        with contextlib.suppress(*DEPENDENCY_ERRORS):
            await self._store(
                lambda conn: store.retry_transcode_later(
                    conn, job, self.name, reason, STORAGE_RETRY_SECONDS, counted=False
                )
            )

    async def _failed_attempt(self, job: store.TranscodeJob, error: str) -> None:
        if job.attempts >= self.max_attempts:
            JOBS.labels("failed").inc()
            log.warning(
                "renditions failed for good: %s", error, extra={"video_id": str(job.video_id)}
            )
            await self._finish(job, "failed", None)
            return
        JOBS.labels("retried").inc()
        delay = BACKOFF_SECONDS * 2 ** (job.attempts - 1)
        log.info(
            "transcode retried in %.0fs: %s", delay, error, extra={"video_id": str(job.video_id)}
        )
        await self._store(
            lambda conn: store.retry_transcode_later(
                conn, job, self.name, error, delay, counted=True
            )
        )

    async def _attempt(self, job: store.TranscodeJob) -> None:
        video = await self._store(lambda conn: store.video_by_id(conn, job.video_id))
        if video is None or video.deleted_at is not None:
            await self._store(lambda conn: store.delete_transcode_job(conn, job.video_id))
            return
        if video.state != "processing":  # done before; only the card may not have been
            await self._finish(job, video.state, video.hls_key)
            return
        started = time.monotonic()
        folder = self.work_dir / str(job.video_id)
        heartbeat = asyncio.create_task(self._keep_lease(job.video_id))
        try:
            master = await self._build_ladder(video, folder, heartbeat)
        finally:
            heartbeat.cancel()
            shutil.rmtree(folder, ignore_errors=True)
        took = time.monotonic() - started
        TRANSCODE_SECONDS.observe(took)
        TRANSCODE_RATIO.observe(took / max(video.duration_ms / 1000, 0.1))
        await self._finish(job, "ready", master)
        JOBS.labels("ready").inc()
        log.info("renditions ready in %.1fs", took, extra={"video_id": str(job.video_id)})

    async def _build_ladder(
        self, video: store.VideoRow, folder: Path, heartbeat: asyncio.Task[None]
    ) -> str:
        """Download, transcode, upload; returns the master playlist's key."""
        s = self.storage
        folder.mkdir(parents=True, exist_ok=True)
        source_path, out = folder / "source", folder / "hls"
        if not await asyncio.to_thread(s.download, video.object_key, str(source_path)):
            raise Unreadable("the source object is gone")
        source = await asyncio.to_thread(probe_source, source_path)
        renditions = ladder.plan_ladder(source.width, source.height)
        for r in renditions:
            (out / r.name).mkdir(parents=True, exist_ok=True)
        argv = _lowest_priority() + ladder.ffmpeg_argv(
            self.ffmpeg, source_path, out, source, renditions
        )
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        ffmpeg = asyncio.ensure_future(proc.communicate())
        try:
            done, _ = await asyncio.wait({ffmpeg, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            if heartbeat in done:  # the lease is gone: stop working on someone else's job
                heartbeat.result()
                raise LeaseLost
            _, stderr = ffmpeg.result()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise Unreadable(
                f"ffmpeg exited {proc.returncode}: {stderr.decode(errors='replace')[-300:]}"
            )
        prefix = objects.hls_prefix(str(video.upload_id))
        await self._upload_tree(out, prefix)
        return prefix + ladder.MASTER_PLAYLIST

    async def _upload_tree(self, out: Path, prefix: str) -> None:
        """Every playlist and segment, the master playlist last: once it exists, all it names do."""
        files = sorted(
            p for p in out.rglob("*") if p.is_file() and p.name != ladder.MASTER_PLAYLIST
        )
        limit = asyncio.Semaphore(UPLOAD_THREADS)
        s = self.storage

        async def put(path: Path) -> None:
            async with limit:
                await asyncio.to_thread(
                    s.upload_immutable,
                    prefix + path.relative_to(out).as_posix(),
                    str(path),
                    ladder.content_type(path),
                )

        await asyncio.gather(*(put(p) for p in files))
        await put(out / ladder.MASTER_PLAYLIST)

    async def _keep_lease(self, video_id: uuid.UUID) -> None:
        """Renews the lease every third of its length; returns when it was lost."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                renewed = await self._store(
                    lambda conn: store.renew_lease(conn, video_id, self.name, LEASE_SECONDS)
                )
            except DEPENDENCY_ERRORS as e:
                log.warning("transcode lease not renewed: %r", e)
                continue
            if not renewed:
                return

    async def _finish(self, job: store.TranscodeJob, state: str, hls_key: str | None) -> None:
        """Records the outcome, rewrites the card, then drops the job. A card that could not be
        written keeps the job, so a later attempt writes it (the ladder is not built again)."""
        row = await self._store(
            lambda conn: store.set_video_state(conn, job.video_id, state, hls_key)
        )
        if row is not None and not await self.cards.write([video_message(row, self.storage)]):
            await self._postpone(job, "card not written")
            return
        await self._store(lambda conn: store.delete_transcode_job(conn, job.video_id))
