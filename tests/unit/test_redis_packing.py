"""The Redis client packs commands with hiredis: byte for byte what redis-py would send, and
redis-py's own errors for values Redis cannot take."""

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from mesh.clients import _HiredisPackedConnection


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "card:{v}", b"\x00\xffbytes", "EX", 3600),
        ("EVALSHA", "abc123", 2, "k1", "k2", 1.5, -7, "caf\u00e9"),
        ("ZADD", "feed:{u}:following", 1732500000123.0, "v", 1e-7, "w", 2.5e300, "x"),
        ("SCRIPT LOAD", "return 1"),  # two words: split the way redis-py splits them
        ("PING",),
    ],
)
def test_packs_what_redis_py_packs(args):
    ours = b"".join(_HiredisPackedConnection().pack_command(*args))
    theirs = b"".join(aioredis.Connection().pack_command(*args))
    assert ours == theirs


def test_values_redis_cannot_take_get_redis_py_errors():
    with pytest.raises(redis.exceptions.DataError):
        _HiredisPackedConnection().pack_command("SET", "k", True)
