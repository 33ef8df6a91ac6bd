"""The lean connection for scripts (``storage/redis/wire.py``), against the real Redis.

What it must keep of redis-py's client: the shape of every answer (bytes, ints, nested lists,
None), redis-py's exception for each error (``outage.py`` tells an outage from a bug by them),
scripts that survive a server that forgot them. What it adds, and must not get wrong: many
callers' commands pipelined on a couple of connections, each answer reaching its own caller,
through cancelled callers, a timeout and a reconnection. Silence, resets and refusals come
from a relay in front of Redis (``tests/support/tcp_proxy.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from tessera.storage.redis.client import KeySpace
from tessera.storage.redis.outage import is_outage
from tessera.storage.redis.wire import RedisWire
from tests.support.redis_service import REDIS_HOST, REDIS_PORT, new_wire, redis_space
from tests.support.tcp_proxy import TcpRelay, free_port

# Generous guards against a hang; never a measure.
GUARD_S = 20.0
# A short answer timeout for the tests that wait for one, and the slack its measure allows.
TIMEOUT_S = 0.5
SLACK_S = 0.5


@pytest.fixture
async def space(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Redis, KeySpace]]:
    async with redis_space(request.node.name) as opened:
        yield opened


@pytest.fixture
async def wire() -> AsyncIterator[RedisWire]:
    opened = new_wire()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    opened = TcpRelay(REDIS_HOST, REDIS_PORT)
    await opened.up()
    try:
        yield opened
    finally:
        await opened.down()


async def test_answers_keep_their_shapes(wire: RedisWire, space: tuple[Redis, KeySpace]) -> None:
    _client, keys = space
    key = keys.key("shape", "a")
    assert await wire.execute("PING") == b"PONG"
    assert await wire.execute("SET", key, b"\x00\xffbinary") == b"OK"
    assert await wire.execute("GET", key) == b"\x00\xffbinary"
    assert await wire.execute("GET", keys.key("shape", "missing")) is None
    assert await wire.execute("INCRBY", keys.key("shape", "n"), 41) == 41
    assert await wire.execute("LRANGE", keys.key("shape", "missing"), 0, -1) == []
    nested = wire.register_script(
        "return {1, false, 'text', {2, {redis.call('GET', KEYS[1])}}, {}, ARGV[1]}"
    )
    assert await nested(keys=[key], args=["é"]) == [
        1,
        None,
        b"text",
        [2, [b"\x00\xffbinary"]],
        [],
        "é".encode(),
    ]
    # A script's false, alone, is nil: None, as redis-py answers it.
    assert await wire.register_script("return false")() is None


async def test_many_callers_share_two_connections_and_each_gets_its_own_answer(
    wire: RedisWire,
) -> None:
    # Answers of very different sizes: a large one arrives in several reads, small ones
    # several to a read.
    payloads = [
        secrets.token_bytes(1 + (i * 7919) % 200_000 if i % 50 == 0 else i) for i in range(600)
    ]
    answers = await asyncio.wait_for(
        asyncio.gather(*(wire.execute("ECHO", payload) for payload in payloads)), GUARD_S
    )
    assert answers == payloads
    ids = await asyncio.gather(*(wire.execute("CLIENT", "ID") for _ in range(20)))
    assert len(set(ids)) == 2


async def test_the_commands_of_one_turn_of_the_loop_go_out_in_one_write_per_connection(
    wire: RedisWire,
) -> None:
    # On loopback each send() also runs Redis's side of TCP: the requests one turn of the
    # event loop serves share one write per connection instead of one each.
    await asyncio.gather(*(wire.execute("PING") for _ in range(4)))  # both connections open
    writes: list[bytes] = []
    for slot in wire._slots:
        connection = slot.connection
        assert connection is not None and connection._transport is not None
        transport = connection._transport
        send = transport.write

        def counted(data: bytes | bytearray | memoryview, send: Any = send) -> None:
            writes.append(bytes(data))
            send(data)

        transport.write = counted  # type: ignore[method-assign]
    payloads = [f"caller {n}".encode() for n in range(50)]
    answers = await asyncio.wait_for(
        asyncio.gather(*(wire.execute("ECHO", payload) for payload in payloads)), GUARD_S
    )
    assert answers == payloads
    assert len(writes) == 2  # 25 commands in each
    assert all(write.count(b"ECHO") == 25 for write in writes)
    # A command alone (the next turn) still goes out by itself, at once.
    assert await wire.execute("ECHO", b"alone") == b"alone"
    assert len(writes) == 3


async def test_a_script_the_server_forgot_is_loaded_and_run_again(
    wire: RedisWire, space: tuple[Redis, KeySpace]
) -> None:
    client, keys = space
    counter = keys.key("script", "runs")
    # A script no server has seen (its text is new), so its first call finds it missing.
    script = wire.register_script(f"-- {secrets.token_hex(8)}\nreturn redis.call('INCR', KEYS[1])")
    assert await script(keys=[counter]) == 1
    await client.script_flush()
    assert await script(keys=[counter]) == 2
    # Run once each time: NOSCRIPT means it did not run.
    assert await client.get(counter) == b"2"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("READONLY You can't write against a read only replica.", redis_errors.ReadOnlyError),
        ("OOM command not allowed when used memory > 'maxmemory'.", redis_errors.OutOfMemoryError),
        ("TRYAGAIN Multiple keys request during rehashing of slot", redis_errors.TryAgainError),
        ("MASTERDOWN Link with MASTER is down", redis_errors.MasterDownError),
        ("CLUSTERDOWN The cluster is down", redis_errors.ClusterDownError),
        ("LOADING Redis is loading the dataset in memory", redis_errors.BusyLoadingError),
        ("NOSCRIPT No matching script", redis_errors.NoScriptError),
        ("ERR something else went wrong", redis_errors.ResponseError),
        ("WRONGTYPE Operation against a key holding the wrong kind", redis_errors.ResponseError),
    ],
)
async def test_an_error_answer_is_redis_pys_exception(
    wire: RedisWire, answer: str, error: type[Exception]
) -> None:
    # The server itself answers the error (a script can answer any).
    script = wire.register_script("return redis.error_reply(ARGV[1])")
    with pytest.raises(error) as raised:
        await script(args=[answer])
    assert type(raised.value) is error
    assert answer.partition(" ")[2] in str(raised.value)
    # And the connection goes on answering in order.
    assert await wire.execute("ECHO", "after") == b"after"


async def test_a_bug_is_not_an_outage_and_an_outage_is(wire: RedisWire) -> None:
    with pytest.raises(redis_errors.ResponseError) as bug:
        await wire.register_script("return redis.call('NOSUCHCOMMAND')")()
    assert not is_outage(bug.value)
    with pytest.raises(redis_errors.ReadOnlyError) as outage:
        await wire.register_script("return redis.error_reply('READONLY replica')")()
    assert is_outage(outage.value)


async def test_cancelled_callers_do_not_misalign_the_answers_behind_them(
    space: tuple[Redis, KeySpace],
) -> None:
    _client, keys = space
    # One connection, held up by a blocking pop: every command queues behind it, unanswered,
    # while some of their callers are cancelled (the pop's own caller among them).
    wire = new_wire(connections=1)
    try:
        held_up = asyncio.create_task(wire.execute("BLPOP", keys.key("wait", "list"), 0.3))
        await asyncio.sleep(0.05)
        callers = [asyncio.create_task(wire.execute("ECHO", f"echo-{i}")) for i in range(40)]
        await asyncio.sleep(0.05)
        assert not any(caller.done() for caller in callers)
        held_up.cancel()
        for caller in callers[::3]:
            caller.cancel()
        await asyncio.wait_for(asyncio.wait(callers), GUARD_S)
        for i, caller in enumerate(callers):
            if i % 3 == 0:
                assert caller.cancelled()
            else:
                assert caller.result() == f"echo-{i}".encode()
        assert held_up.cancelled()
        later = await asyncio.gather(*(wire.execute("ECHO", f"later-{i}") for i in range(10)))
        assert later == [f"later-{i}".encode() for i in range(10)]
    finally:
        await wire.aclose()


async def test_a_silent_server_times_out_and_the_next_command_reconnects(
    relay: TcpRelay,
) -> None:
    wire = new_wire(relay.port, timeout_s=TIMEOUT_S)
    try:
        assert await wire.execute("PING") == b"PONG"
        await relay.hang()
        began = time.monotonic()
        waiting = [asyncio.create_task(wire.execute("ECHO", str(i))) for i in range(10)]
        await asyncio.wait_for(asyncio.wait(waiting), GUARD_S)
        took = time.monotonic() - began
        # Every command waiting on the connection failed with it, within the timeout.
        for task in waiting:
            error = task.exception()
            assert isinstance(error, redis_errors.TimeoutError)
            assert is_outage(error)
        assert TIMEOUT_S <= took < TIMEOUT_S + SLACK_S
        await relay.up()
        # The connection the silence broke is not used again: its answers would come late.
        answers = await asyncio.gather(*(wire.execute("ECHO", f"back-{i}") for i in range(10)))
        assert answers == [f"back-{i}".encode() for i in range(10)]
    finally:
        await wire.aclose()


async def test_a_server_that_accepts_and_never_answers_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire = new_wire(port, timeout_s=TIMEOUT_S)
    try:
        began = time.monotonic()
        with pytest.raises(redis_errors.TimeoutError):
            await wire.execute("PING")
        assert TIMEOUT_S <= time.monotonic() - began < TIMEOUT_S + SLACK_S
    finally:
        await wire.aclose()
        server.close()
        await server.wait_closed()


async def test_a_reset_fails_the_waiting_commands_and_the_next_one_reconnects(
    relay: TcpRelay,
) -> None:
    wire = new_wire(relay.port)
    try:
        assert await wire.execute("PING") == b"PONG"
        await relay.hang()
        waiting = [asyncio.create_task(wire.execute("ECHO", str(i))) for i in range(4)]
        await asyncio.sleep(0.05)
        await relay.reset()
        await asyncio.wait_for(asyncio.wait(waiting), GUARD_S)
        for task in waiting:
            assert isinstance(task.exception(), redis_errors.ConnectionError)
        await relay.up()
        assert await wire.execute("ECHO", "again") == b"again"
    finally:
        await wire.aclose()


async def test_no_server_is_a_connection_error_until_one_listens(relay: TcpRelay) -> None:
    wire = new_wire(relay.port)
    try:
        await relay.down()
        with pytest.raises(redis_errors.ConnectionError) as refused:
            await wire.execute("PING")
        assert is_outage(refused.value)
        await relay.up()
        assert await wire.execute("PING") == b"PONG"
    finally:
        await wire.aclose()


async def test_nothing_listening_at_all_is_a_connection_error() -> None:
    wire = new_wire(free_port())
    try:
        with pytest.raises(redis_errors.ConnectionError):
            await wire.execute("PING")
    finally:
        await wire.aclose()


async def test_a_wrong_password_is_a_clear_authentication_error() -> None:
    wire = new_wire(password="not-the-password")
    try:
        with pytest.raises(redis_errors.AuthenticationError) as refused:
            await wire.execute("PING")
        assert "refused AUTH" in str(refused.value)
        # An outage as redis-py's own refused login is (outage.py): a 503, not a bug.
        assert is_outage(refused.value)
    finally:
        await wire.aclose()


async def test_the_database_is_selected(space: tuple[Redis, KeySpace]) -> None:
    _client, keys = space
    key = keys.key("db", "x")
    wire = new_wire(db=3)
    other_db = Redis(host=REDIS_HOST, port=REDIS_PORT, db=3)
    try:
        await wire.execute("SET", key, b"in-3", "PX", 60_000)
        assert await other_db.get(key) == b"in-3"
    finally:
        await other_db.delete(key)
        await other_db.aclose()
        await wire.aclose()


async def test_a_database_out_of_range_is_refused_clearly() -> None:
    wire = new_wire(db=100_000)
    try:
        with pytest.raises(redis_errors.ResponseError, match="refused SELECT"):
            await wire.execute("PING")
    finally:
        await wire.aclose()


async def test_a_closed_wire_refuses_commands() -> None:
    wire = new_wire()
    assert await wire.execute("PING") == b"PONG"
    await wire.aclose()
    with pytest.raises(redis_errors.ConnectionError):
        await wire.execute("PING")
