"""Credentials for the embedded Postgres: SCRAM passwords, a role per service owning only its
schema, and a read-only role for the feed's replica reads.

Run by the launcher against its own Postgres after every start (idempotent), as the superuser:
- ``postgres`` (the superuser: the launcher, tests and benchmarks) gets a password made on first
  run; the cluster's ``pg_hba.conf`` then allows only SCRAM over TCP (no ``trust``). A cluster
  made before passwords existed is trusted exactly once, for this step.
- ``activity_svc`` owns schema ``activity``, ``upload_svc`` owns ``upload``: each service's
  migrations run as that role, and it can touch no other schema.
- ``feed_svc`` and ``precache_svc`` log in as members of ``tiktok_reader``, which gets ``USAGE``
  on the two schemas; each owning service's migrations grant it ``SELECT`` on exactly the tables
  ``readmodels.replica`` reads (never users, sessions or credentials).
- ``replicator`` may only stream WAL: the replica's login for ``pg_basebackup`` and streaming.
With a managed ``DATABASE_URL`` none of this runs: production gives each service its own URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from mesh.keyfiles import secret_text

SUPERUSER = "postgres"
READER = "tiktok_reader"
# the streaming replica's login (REPLICATION, nothing else)
REPLICATOR = "replicator"
REPLICATION_SLOT = "replica"
# service → (its login role, the schema it owns or None, whether it reads the others' tables)
ROLES = {
    "activity": ("activity_svc", "activity", False),
    "upload": ("upload_svc", "upload", False),
    "feed": ("feed_svc", None, True),
    "precache": ("precache_svc", None, True),
}
HBA = """# written by the stack at every start: every connection needs a SCRAM password
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
host replication replicator 127.0.0.1/32 scram-sha-256
"""
HBA_FIRST_START = """# written by the stack: trusted only until the first start has set passwords
host all all 127.0.0.1/32 trust
"""


@dataclass(frozen=True)
class Credentials:
    secrets: Path
    host: str
    port: int

    def password(self, role: str) -> str:
        return secret_text(self.secrets / f"postgres-{role}.password")

    def url(self, role: str) -> str:
        return (
            f"postgresql://{role}:{quote(self.password(role), safe='')}"
            f"@{self.host}:{self.port}/postgres"
        )

    def service_url(self, service: str) -> str:
        return self.url(ROLES[service][0])


def passwords_set(pgdata: Path) -> bool:
    return (pgdata / "scram-ready").exists()


def hba(pgdata: Path) -> str:
    """The pg_hba.conf to start with: SCRAM only, unless passwords have never been set."""
    return HBA if passwords_set(pgdata) else HBA_FIRST_START


def bootstrap(creds: Credentials, pgdata: Path) -> bool:
    """Sets passwords, roles, schema owners and grants; returns True when pg_hba.conf was just
    switched to SCRAM (the caller writes it and reloads)."""
    first = not passwords_set(pgdata)
    admin = creds.url(SUPERUSER)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        _set_password(conn, SUPERUSER, creds.password(SUPERUSER), create=False)
        _ensure_role(conn, READER, login=False)
        _set_password(conn, REPLICATOR, creds.password(REPLICATOR), create=True)
        conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(_id(REPLICATOR)))
        for role, schema, reads in ROLES.values():
            _set_password(conn, role, creds.password(role), create=True)
            if schema is not None:
                _own_schema(conn, schema, role)
            if reads:
                conn.execute(sql.SQL("GRANT {} TO {}").format(_id(READER), _id(role)))
        # the replica readers watch its WAL receiver (pg_stat_wal_receiver is empty without it)
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(_id(READER)))
        for _, schema, _ in ROLES.values():
            if schema is not None:
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_id(schema), _id(READER))
                )
    return first


def _id(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _ensure_role(conn: psycopg.Connection, role: str, *, login: bool) -> None:
    cur = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    if cur.fetchone() is None:
        conn.execute(
            sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(_id(role))
        )


def _set_password(conn: psycopg.Connection, role: str, password: str, *, create: bool) -> None:
    if create:
        _ensure_role(conn, role, login=True)
    # SCRAM-hashed by the server (password_encryption defaults to scram-sha-256)
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(_id(role), sql.Literal(password)))


def _own_schema(conn: psycopg.Connection, schema: str, role: str) -> None:
    """``role`` owns ``schema`` and everything in it (a cluster from before roles had its
    tables made by the superuser)."""
    conn.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(_id(schema), _id(role))
    )
    conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(_id(schema), _id(role)))
    cur = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')"
        " AND pg_get_userbyid(c.relowner) <> %s",
        [schema, role],
    )
    for (table,) in cur.fetchall():
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(_id(schema), _id(table), _id(role))
        )
