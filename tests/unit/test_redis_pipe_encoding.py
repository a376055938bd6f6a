"""What RedisPipe sends and where (no server needed: the wire format and the URL's reading)."""

from __future__ import annotations

import ssl

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.store.pipe import RedisPipe, bulk, encode


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert encode(("SET", b"k\r\n", 5, 1.5)) == b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    with pytest.raises(TypeError):
        encode(("SET", "k", True))  # a bool is a bug in the caller, as redis-py says too


_ARGUMENTS = st.lists(st.one_of(st.integers(), st.floats(), st.binary(),
                                 st.text(st.characters(exclude_categories=("Cs",)))), max_size=12)


@given(_ARGUMENTS)
def test_a_packed_command_is_its_arguments_encoded_one_by_one(arguments: list[int | float | bytes | str]) -> None:
    # hiredis packs them in C: the bytes must be those of bulk() (redis-py's forms of numbers).
    expected = b"".join(map(bulk, arguments))
    assert encode(tuple(arguments)) == b"*%d\r\n" % len(arguments) + expected
    assert encode(arguments) == encode(tuple(arguments))


def test_what_redis_reads_back_is_what_was_meant() -> None:
    reader = hiredis.Reader()  # Redis parses requests as RESP arrays too
    reader.feed(encode(("HSET", "h", "f", "caf\u00e9")))
    assert reader.gets() == [b"HSET", b"h", b"f", "caf\u00e9".encode()]


def test_the_url_decides_address_tls_and_verification() -> None:
    plain = RedisPipe("redis://10.0.0.5:6380/2")
    assert (plain.host, plain.port, plain.path, plain.ssl) == ("10.0.0.5", 6380, None, None)
    assert RedisPipe("unix:///run/redis.sock").path == "/run/redis.sock"
    verified = RedisPipe("rediss://cache.internal:6380")
    assert verified.ssl is not None and verified.ssl.verify_mode == ssl.CERT_REQUIRED
    unverified = RedisPipe("rediss://cache.internal:6380?ssl_cert_reqs=none")
    assert unverified.ssl is not None and unverified.ssl.verify_mode == ssl.CERT_NONE
