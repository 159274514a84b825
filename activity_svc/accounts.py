"""ActivityService: sign-up, sign-in, and reading users."""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import empty_pb2

from activity_svc import rules, store
from activity_svc.servicer import ServicerBase, caller_uuid, user_message
from mesh.auth import caller_session
from mesh.errors import AlreadyExists, NotFound, Unauthenticated, shown
from mesh.proto import timestamp
from mesh.validation import parse_uuid
from tiktok.v1 import activity_pb2, common_pb2

log = logging.getLogger("activity_svc")

WRONG_CREDENTIALS = "handle or password is wrong"


class AccountRpcs(ServicerBase):
    def _session(
        self, row: store.UserRow, session_id: uuid.UUID, refresh_token: str
    ) -> activity_pb2.Session:
        token = self.tokens.issue(str(row.user_id), str(session_id))
        return activity_pb2.Session(
            user=user_message(row),
            access_token=token.token,
            expires_at=timestamp(token.expires_at),
            refresh_token=refresh_token,
        )

    async def CreateUser(
        self, request: activity_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Session:
        handle = rules.check_handle(request.handle)
        password = rules.check_password(request.password)
        display_name = rules.check_display_name(request.display_name, handle)
        password_hash = await self.passwords.hash(password)
        async with self.pool.connection() as conn, conn.transaction():
            row = await store.insert_user(conn, handle, display_name, password_hash)
            if row is None:
                raise AlreadyExists(f"handle {shown(handle)} is already taken")
            session = await self.sessions.start(conn, row.user_id)
        log.info("user created", extra={"new_user_id": str(row.user_id)})
        return self._session(row, *session)

    async def CreateSession(
        self, request: activity_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Session:
        # Malformed input is still a client mistake worth naming; only the outcome of a
        # well-formed attempt is kept vague.
        rules.check_handle(request.handle)
        if not request.password:
            rules.check_password(request.password)
        await self.signin_limit.check(request.handle)
        async with self.pool.connection() as conn:
            row = await store.user_by_handle(conn, request.handle)
        ok = await self.passwords.verify(row.password_hash if row else None, request.password)
        if row is None or not ok:
            await self.signin_limit.failed(request.handle)
            raise Unauthenticated(WRONG_CREDENTIALS)
        new_hash = None
        if self.passwords.needs_rehash(row.password_hash):
            new_hash = await self.passwords.hash(request.password)
        async with self.pool.connection() as conn, conn.transaction():
            if new_hash is not None:
                await store.update_password_hash(conn, row.user_id, new_hash)
            session = await self.sessions.start(conn, row.user_id)
        return self._session(row, *session)

    async def RefreshSession(
        self, request: activity_pb2.RefreshSessionRequest, context: grpc.aio.ServicerContext
    ) -> activity_pb2.Session:
        refreshed = await self.sessions.refresh(request.refresh_token)
        return self._session(refreshed.user, refreshed.session_id, refreshed.refresh_token)

    async def DeleteSession(
        self, request: activity_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.sessions.end(caller_session(context), caller_uuid(context))
        return empty_pb2.Empty()

    async def GetUser(
        self, request: activity_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.User:
        user_id = parse_uuid(request.user_id, "user_id")
        rows = await self.reads.primary_first(lambda conn: store.user_views(conn, [user_id]))
        if not rows:
            raise NotFound("user", request.user_id)
        return user_message(rows[0])
