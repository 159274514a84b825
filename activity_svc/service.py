"""ActivityService servicer: validate the request, call the store, build the reply.

Writes that change state record their event in the same transaction; counters are not touched
here (the counter consumer applies the events). Lists and bulk reads go through ``reads`` (the
replica once it has replayed what the primary had when the read began, so what a user just
wrote they read back); single reads and everything a write decides on go to the primary.

One class, one mixin per group of RPCs: ``accounts``, ``follows``, ``engagement`` (likes,
favorites, counts), ``comments``; what they share is in ``servicer``.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from activity_svc.accounts import AccountRpcs
from activity_svc.comments import CommentRpcs
from activity_svc.credentials import Passwords, TokenIssuer
from activity_svc.engagement import EngagementRpcs
from activity_svc.follows import FollowRpcs
from activity_svc.repair import MirrorRepair
from activity_svc.sessions import Sessions
from activity_svc.signin_limit import SignInLimit
from activity_svc.videos import VideoDirectory
from activity_svc.views import ViewDedup, ViewRpcs
from mesh.db import ReadRouter
from readmodels.counters import CounterMirror
from tiktok.v1 import activity_pb2_grpc


class ActivityService(
    AccountRpcs,
    FollowRpcs,
    EngagementRpcs,
    CommentRpcs,
    ViewRpcs,
    activity_pb2_grpc.ActivityServiceServicer,
):
    def __init__(
        self,
        pool: AsyncConnectionPool,
        reads: ReadRouter,
        passwords: Passwords,
        signin_limit: SignInLimit,
        tokens: TokenIssuer,
        sessions: Sessions,
        videos: VideoDirectory,
        mirror: CounterMirror,
        view_dedup: ViewDedup,
    ) -> None:
        self.pool = pool
        self.reads = reads
        self.passwords = passwords
        self.signin_limit = signin_limit
        self.tokens = tokens
        self.sessions = sessions
        self.videos = videos
        self.repair = MirrorRepair(mirror)
        self.view_dedup = view_dedup
