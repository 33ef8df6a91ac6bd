"""How a checked request travels through the ingest queue: the IncomingBatch, stamped with
every id the API answered, as MessagePack with a version number in front."""

from __future__ import annotations

import msgspec

from tessera.pipeline.request import IncomingBatch

VERSION = 1


class QueuedBatch(msgspec.Struct, array_like=True):
    version: int
    batch: IncomingBatch


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(QueuedBatch)


class UnreadableMessage(ValueError):
    """The message is not a batch this version of Tessera can read (a poison message)."""


def encode_batch(batch: IncomingBatch) -> bytes:
    return _encoder.encode(QueuedBatch(VERSION, batch))


def decode_batch(body: bytes) -> IncomingBatch:
    try:
        queued = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnreadableMessage(f"not a queued batch: {exc}") from None
    if queued.version != VERSION:
        raise UnreadableMessage(f"queued batch version {queued.version} is not {VERSION}")
    return queued.batch
