"""The embedded ingest log's tables and the SQL every process runs on them.

One file holds one topic: the messages, and for the one consumer group, each partition's
committed position, how far it was ever handed out, and who leases it. Nothing a consumer needs
lives only in another process's memory, so the API process and any number of ``tessera worker``
processes share the file (WAL mode, busy timeout).

Each claim of a partition bumps its ``generation``; a consumer renews, acknowledges and releases
only under the generation it claimed, so a consumer whose lease was taken over can never move
the new owner's position.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from tessera.errors import ConfigurationError

SCHEMA = (
    # AUTOINCREMENT: a seq is never reused, even after retention removed the newest messages
    # (a reused seq at or below a committed position would count as acknowledged).
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " partition INTEGER NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS messages_by_partition ON messages (partition, seq)",
    "CREATE TABLE IF NOT EXISTS partitions (partition INTEGER PRIMARY KEY,"
    " committed INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0,"
    " owner TEXT, expires REAL NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS consumers (owner TEXT PRIMARY KEY, seen REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS log_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
INSERT_MESSAGE = "INSERT INTO messages (partition, key, body, created) VALUES (?, ?, ?, ?)"
UNACKNOWLEDGED = (
    "SELECT count(*) FROM messages m JOIN partitions p ON p.partition = m.partition"
    " WHERE m.seq > p.committed"
)
# Each only under the generation the consumer claimed: see the module docstring.
RENEW = "UPDATE partitions SET expires = ? WHERE partition = ? AND owner = ? AND generation = ?"
RELEASE = (
    "UPDATE partitions SET owner = NULL, expires = 0"
    " WHERE partition = ? AND owner = ? AND generation = ?"
)
MARK_DELIVERED = (
    "UPDATE partitions SET delivered = max(delivered, ?)"
    " WHERE partition = ? AND owner = ? AND generation = ?"
)
COMMIT_POSITION = (
    "UPDATE partitions SET committed = max(committed, ?)"
    " WHERE partition = ? AND owner = ? AND generation = ?"
)
COUNT_FREE = "SELECT count(*) FROM partitions WHERE owner IS NULL OR expires <= ?"
FIRST_FREE = (
    "SELECT partition, generation, committed, delivered FROM partitions"
    " WHERE owner IS NULL OR expires <= ? ORDER BY partition LIMIT ?"
)
# Deletes run in chunks so that no trim holds the write lock (and publishers) for long.
TRIM_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Claim:
    partition: int
    generation: int
    committed: int
    # Seqs up to this one were handed out before: fetching them again is a redelivery.
    delivered: int


@dataclass(slots=True)
class Rebalance:
    lost: list[int]
    released: list[int]
    claimed: list[Claim]


def prepare(connection: sqlite3.Connection, partitions: int) -> None:
    """Create the tables and one row per partition; refuse a partition count that would move
    keys to other partitions while messages are still waiting."""
    tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if not tables:
        # Lets trimming give pages back to the file system. Only a new file can take it, and
        # switching to WAL already wrote its header, hence the VACUUM (instant while empty).
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("VACUUM")
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            connection.execute(statement)
        row = connection.execute("SELECT value FROM log_settings WHERE name = 'partitions'")
        found = row.fetchone()
        if found is not None and int(found[0]) != partitions:
            waiting = connection.execute(UNACKNOWLEDGED).fetchone()[0]
            if waiting:
                raise ConfigurationError(
                    f"the embedded queue has {found[0]} partitions and {waiting} unacknowledged"
                    f" messages: drain it before changing TESSERA_QUEUE_PARTITIONS to {partitions}"
                )
            connection.execute("DELETE FROM partitions WHERE partition >= ?", (partitions,))
        connection.execute(
            "INSERT INTO log_settings (name, value) VALUES ('partitions', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(partitions),),
        )
        connection.executemany(
            "INSERT OR IGNORE INTO partitions (partition) VALUES (?)",
            [(p,) for p in range(partitions)],
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def fair_share(connection: sqlite3.Connection, partitions: int, now: float, lease: float) -> int:
    live = connection.execute("SELECT count(*) FROM consumers WHERE seen > ?", (now - lease,))
    return math.ceil(partitions / max(1, int(live.fetchone()[0])))


def free_partitions(connection: sqlite3.Connection, now: float) -> int:
    found = connection.execute(COUNT_FREE, (now,))
    return int(found.fetchone()[0])


def rebalance(
    connection: sqlite3.Connection,
    owner: str,
    held: dict[int, int],
    busy: set[int],
    *,
    partitions: int,
    now: float,
    lease: float,
) -> Rebalance:
    """Beat, renew the leases in ``held`` (partition → generation), give back idle partitions
    beyond the fair share (never one in ``busy``: it has unacknowledged deliveries) and claim
    free or expired ones up to it, all in one transaction."""
    result = Rebalance(lost=[], released=[], claimed=[])
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "INSERT INTO consumers (owner, seen) VALUES (?, ?)"
            " ON CONFLICT (owner) DO UPDATE SET seen = excluded.seen",
            (owner, now),
        )
        connection.execute("DELETE FROM consumers WHERE seen <= ?", (now - lease,))
        share = fair_share(connection, partitions, now, lease)
        for partition, generation in held.items():
            renewed = connection.execute(RENEW, (now + lease, partition, owner, generation))
            if renewed.rowcount == 0:
                result.lost.append(partition)
        kept = [p for p in sorted(held) if p not in result.lost]
        for partition in reversed([p for p in kept if p not in busy]):
            if len(kept) <= share:
                break
            connection.execute(RELEASE, (partition, owner, held[partition]))
            kept.remove(partition)
            result.released.append(partition)
        if len(kept) < share:
            free = connection.execute(FIRST_FREE, (now, share - len(kept))).fetchall()
            for partition, generation, committed, delivered in free:
                connection.execute(
                    "UPDATE partitions SET owner = ?, expires = ?, generation = ?"
                    " WHERE partition = ?",
                    (owner, now + lease, generation + 1, partition),
                )
                result.claimed.append(Claim(partition, generation + 1, committed, delivered))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return result


def update_held(
    connection: sqlite3.Connection, statement: str, owner: str, rows: list[tuple[int, int, int]]
) -> list[int]:
    """Run MARK_DELIVERED or COMMIT_POSITION for each (value, partition, generation) in one
    transaction; the partitions no longer held (their update did nothing)."""
    lost: list[int] = []
    connection.execute("BEGIN IMMEDIATE")
    try:
        for value, partition, generation in rows:
            if connection.execute(statement, (value, partition, owner, generation)).rowcount == 0:
                lost.append(partition)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return lost


def leave(connection: sqlite3.Connection, owner: str, held: dict[int, int]) -> None:
    """Give back every lease in ``held`` (partition → generation) and the heartbeat."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(RELEASE, [(p, owner, g) for p, g in held.items()])
        connection.execute("DELETE FROM consumers WHERE owner = ?", (owner,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def read_after(
    connection: sqlite3.Connection, partition: int, after: int, limit: int
) -> list[tuple[int, str, bytes]]:
    rows = connection.execute(
        "SELECT seq, key, body FROM messages WHERE partition = ? AND seq > ? ORDER BY seq LIMIT ?",
        (partition, after, limit),
    )
    return [(seq, key, bytes(body)) for seq, key, body in rows]


def unacknowledged(connection: sqlite3.Connection) -> int:
    """Messages no consumer acknowledged yet; a count on the partition index, no row read."""
    return int(connection.execute(UNACKNOWLEDGED).fetchone()[0])


def newest_seq(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0])


def partition_rows(connection: sqlite3.Connection) -> list[tuple[int, int, str | None, float]]:
    """(partition, backlog, owner, lease expiry) for every partition."""
    rows = connection.execute(
        "SELECT p.partition, (SELECT count(*) FROM messages m WHERE m.partition = p.partition"
        " AND m.seq > p.committed), p.owner, p.expires FROM partitions p ORDER BY p.partition"
    )
    return [(int(p), int(backlog), owner, float(expires)) for p, backlog, owner, expires in rows]


def used_bytes(connection: sqlite3.Connection) -> int:
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    free = connection.execute("PRAGMA freelist_count").fetchone()[0]
    size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def trim(connection: sqlite3.Connection, *, older_than: float, budget_bytes: int) -> int:
    """Delete acknowledged messages created before ``older_than``, then the oldest acknowledged
    ones while the log is over ``budget_bytes``. Unacknowledged messages always stay."""
    removed = 0
    committed = connection.execute("SELECT partition, committed FROM partitions").fetchall()
    for partition, position in committed:
        while True:
            deleted = _delete_chunk(
                connection,
                "SELECT seq FROM messages WHERE partition = ? AND seq <= ? AND created < ?"
                " ORDER BY seq LIMIT ?",
                (partition, position, older_than, TRIM_CHUNK),
            )
            removed += deleted
            if deleted < TRIM_CHUNK:
                break
    excess = used_bytes(connection) - budget_bytes
    after = 0
    while excess > 0:
        # Oldest first across partitions: seq order is publish order.
        oldest = connection.execute(
            "SELECT m.seq, length(m.body) + length(m.key) FROM messages m"
            " JOIN partitions p ON p.partition = m.partition"
            " WHERE m.seq > ? AND m.seq <= p.committed ORDER BY m.seq LIMIT ?",
            (after, TRIM_CHUNK),
        ).fetchall()
        if not oldest:
            break
        chosen: list[int] = []
        for seq, size in oldest:
            if excess <= 0:
                break
            chosen.append(seq)
            # Row and index overhead beside the payload, roughly.
            excess -= int(size) + 48
        after = chosen[-1]
        removed += _delete_seqs(connection, chosen)
    if removed:
        # executescript steps it to the end; execute() would free a single page per call.
        connection.executescript("PRAGMA incremental_vacuum")
    return removed


def _delete_chunk(
    connection: sqlite3.Connection, select: str, parameters: tuple[object, ...]
) -> int:
    return _delete_seqs(connection, [row[0] for row in connection.execute(select, parameters)])


def _delete_seqs(connection: sqlite3.Connection, seqs: list[int]) -> int:
    if not seqs:
        return 0
    connection.execute("BEGIN IMMEDIATE")
    try:
        deleted = connection.executemany("DELETE FROM messages WHERE seq = ?", [(s,) for s in seqs])
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return deleted.rowcount
