"""What the search representation of a document costs Elasticsearch, old and new side by side.

    python benchmarks/search_representation.py [--url http://127.0.0.1:9200]
        [--events 20000] [--profiles 5000] [--rounds 2]

The same realistic records (profiles with traits and data, events with properties, context
and the request's headers; encoded as the writer does, msgspec.to_builtins) are bulked, 500
to a request, without refresh (`refresh_interval: -1`, no `refresh` parameter), into fresh
one-shard indices with the mapping of each representation:

- `nested`: the earlier one, one `nested` field `sx` with an entry per value (fields.py as of
  commit OLD_COMMIT, read from git so that it is measured exactly as it was shipped);
- `lean`: the current one (fields.py): the keyword `sk` of path-prefixed terms and the
  flattened sort keys `so`, on the document itself, but none for the typed paths whose
  keyword field holds the value (typed_paths.py);
- `lean-untyped`: the same before typed paths: terms and sort keys for every path;
- `flattened`: the alternative of one `flattened` field holding every tagged value under its
  path (same facts as `lean`, but Elasticsearch indexes each value twice: keyed and not).

Per representation: the Python encoding CPU time per record (to_builtins, search fields,
JSON), bulk throughput (records/s), Elasticsearch's own indexing time per record in that index
(`index_time_in_millis` of the index's stats: other indices' load does not count, CPU
contention does), the Elasticsearch process's CPU per record (utime+stime from /proc: whatever
else the cluster serves meanwhile counts too; the rounds alternate representations to spread
it; times are the best of the rounds, sizes the median), and after the timed load, a
refresh, a force-merge to one segment and a flush: Lucene documents per record
(`_cat/indices` docs.count / records) and the store size per record.
Every index is created under its own prefix and deleted at the end.
Not a test: the numbers depend on the machine and the cluster.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import random
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import msgspec
from elasticsearch import Elasticsearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.distributed_services import process_cpu_s, service_pids
from tessera.model.common import Ref
from tessera.model.event import Event, EventMetadata
from tessera.model.profile import Profile, ProfileMetadata, ProfileTime
from tessera.storage.elastic.fields import (
    SEARCH_FIELDS,
    SEARCH_MAPPINGS,
    SEP,
    search_fields,
)
from tessera.storage.elastic.mappings import EVENT, PROFILE
from tessera.storage.elastic.typed_paths import typed_paths

# The last commit with the nested representation.
OLD_COMMIT = "3f6301b"
BULK = 500
Document = dict[str, Any]
_encode = msgspec.json.Encoder().encode


def old_fields_module() -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:tessera/storage/elastic/fields.py"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("nested_fields")
    exec(compile(source, "nested_fields.py", "exec"), module.__dict__)
    return module


def realistic_profile(number: int, now: datetime, rng: random.Random) -> Profile:
    return Profile(
        id=f"p-{number}",
        tenant="bench",
        metadata=ProfileMetadata(time=ProfileTime(insert=now, update=now, last_visit=now)),
        ids=[f"p-{number}", f"anon-{number}"],
        traits={
            "name": f"Visitor {number}",
            "email": f"visitor{number}@example.com",
            "age": rng.randint(18, 80),
            "plan": rng.choice(["free", "pro", "team"]),
            "ltv": round(rng.uniform(0, 5000), 2),
            "visits": rng.randint(1, 300),
            "newsletter": rng.random() < 0.5,
            "tags": rng.sample(["sale", "vip", "mobile", "returning", "b2b", "eu"], 3),
            "address": {"city": rng.choice(["Berlin", "Lyon", "Oslo"]), "zip": f"{number:05d}"},
            "last_products": [f"sku-{rng.randint(1, 999)}" for _ in range(4)],
        },
        data={
            "pii": {"phone": f"+49 30 {number:07d}"},
            "devices": {"last": {"os": "Android", "browser": "Chrome", "version": "120.0"}},
            "preferences": {"language": "de", "currency": "EUR", "theme": None},
        },
        segments=["active"] if number % 3 else [],
    )


def realistic_event(number: int, now: datetime, rng: random.Random) -> Event:
    price = round(rng.uniform(1, 400), 2)
    return Event(
        id=f"e-{number}",
        tenant="bench",
        type=rng.choice(["page-view", "product-view", "add-to-cart", "purchase"]),
        time=now - timedelta(seconds=number),
        metadata=EventMetadata(insert=now),
        source=Ref("web"),
        session=Ref(f"s-{number // 5}"),
        profile=Ref(f"p-{number // 5}"),
        properties={
            "url": f"https://shop.example.com/products/{number % 997}",
            "title": f"Product {number % 997} - Example Shop",
            "sku": f"sku-{number % 997}",
            "category": rng.choice(["shoes", "shirts", "bags"]),
            "price": price,
            "quantity": rng.randint(1, 3),
            "revenue": price * 2,
            "in_stock": True,
        },
        context={
            "page": {"url": "https://shop.example.com/", "referrer": "https://www.google.com/"},
            "browser": {"name": "Firefox", "version": "121.0", "language": "en-US"},
            "screen": {"width": 1920, "height": 1080},
            "utm": {"source": "newsletter", "medium": "email", "campaign": "winter"},
        },
        tags=["web"],
        # As /track stores them: the request's headers (without credentials) and address.
        request={
            "headers": {
                "host": "shop.example.com",
                "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Firefox/121.0",
                "content-type": "application/json",
                "accept-encoding": "gzip",
            },
            "ip": f"10.0.{number % 250}.{number % 199}",
        },
    )


def lean(document: Document, kind: str) -> Document:
    document.update(search_fields(document, typed_paths(kind)))
    return document


def lean_untyped(document: Document, kind: str) -> Document:
    document.update(search_fields(document))
    return document


def flattened(document: Document, kind: str) -> Document:
    by_path: dict[str, list[str]] = {}
    for term in search_fields(document)[SEARCH_FIELDS[0]]:
        path, _, rest = term.partition(SEP)
        if path:
            by_path.setdefault(path, []).append(rest)
    document["sf"] = by_path
    return document


Variant = tuple[Callable[[Document, str], Document], Document]


def variants(
    old: types.ModuleType,
) -> tuple[dict[str, Variant], Callable[[Document, Document], Document]]:
    def nested(document: Document, kind: str) -> Document:
        document[old.SEARCH_FIELD] = old.search_fields(document)
        return document

    def mapping(base: Document, fields: Document) -> Document:
        changed = copy.deepcopy(base)
        for name in SEARCH_FIELDS:
            changed["properties"].pop(name)
        changed["properties"].update(fields)
        changed["_source"] = {"excludes": list(fields)}
        return changed

    return {
        "nested": (nested, {old.SEARCH_FIELD: old.SEARCH_MAPPING}),
        "lean": (lean, SEARCH_MAPPINGS),
        "lean-untyped": (lean_untyped, SEARCH_MAPPINGS),
        "flattened": (flattened, {"sf": {"type": "flattened"}}),
    }, mapping


def run_one(
    client: Elasticsearch,
    index: str,
    mapping: Document,
    encode: Callable[[Document, str], Document],
    records: list[Any],
    pid: int | None,
    kind: str,
) -> dict[str, float]:
    client.indices.create(
        index=index,
        mappings=mapping,
        settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": -1},
    )
    started = time.process_time()
    bodies = []
    for start in range(0, len(records), BULK):
        lines = []
        for record in records[start : start + BULK]:
            lines.append(_encode({"index": {"_index": index, "_id": record.id}}))
            lines.append(_encode(encode(msgspec.to_builtins(record), kind)))
        bodies.append(b"\n".join(lines) + b"\n")
    encode_s = time.process_time() - started
    cpu_before, started = process_cpu_s(pid) if pid else None, time.perf_counter()
    for body in bodies:
        # The body is NDJSON bytes already, as the writer sends it (bulk.py).
        answer = client.bulk(operations=body)  # type: ignore[arg-type]
        if answer["errors"]:
            raise RuntimeError(f"bulk errors in {index}: {answer['items'][0]}")
    bulk_s = time.perf_counter() - started
    cpu_after = process_cpu_s(pid) if pid else None
    stats = client.indices.stats(index=index, metric="indexing")
    indexing_ms = stats["indices"][index]["primaries"]["indexing"]["index_time_in_millis"]
    client.indices.refresh(index=index)
    # One segment each: sizes compare the representations, not how far merging got.
    client.indices.forcemerge(index=index, max_num_segments=1)
    client.indices.flush(index=index)
    # Until the next refresh the searcher holds the merged-away segments on disk.
    client.indices.refresh(index=index)
    rows = client.cat.indices(index=index, format="json", bytes="b").body
    [row] = cast(list[dict[str, str]], rows)
    records_n = len(records)
    cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None
    return {
        "encode_us": encode_s / records_n * 1e6,
        "records_per_s": records_n / bulk_s,
        "es_cpu_us": cpu / records_n * 1e6 if cpu is not None else float("nan"),
        "indexing_us": indexing_ms / records_n * 1e3,
        "lucene_docs": int(row["docs.count"]) / records_n,
        "bytes": int(row["store.size"]) / records_n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ELASTIC_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--profiles", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    rng = random.Random(13)
    now = datetime.now(UTC)
    kinds: dict[str, tuple[Document, list[Any]]] = {
        "profile": (PROFILE, [realistic_profile(n, now, rng) for n in range(options.profiles)]),
        "event": (EVENT, [realistic_event(n, now, rng) for n in range(options.events)]),
    }
    shapes, mapping = variants(old_fields_module())
    prefix = f"tessera-bench-sr-{uuid.uuid4().hex[:8]}"
    client = Elasticsearch(options.url, request_timeout=120)
    pid = service_pids().get("elasticsearch")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        # A first, unmeasured pass warms up both processes' code paths for every variant.
        for round_number in range(-1, options.rounds):
            # Each round starts with another representation: none always runs first.
            order = (
                list(shapes)[round_number % len(shapes) :]
                + list(shapes)[: round_number % len(shapes)]
            )
            for kind, (base, records) in kinds.items():
                for name in order:
                    encode, fields = shapes[name]
                    index = f"{prefix}.{kind}.{name}.{round_number + 1}"
                    sample = records if round_number >= 0 else records[: BULK * 2]
                    measured = run_one(
                        client, index, mapping(base, fields), encode, sample, pid, kind
                    )
                    if round_number >= 0:
                        results.setdefault((kind, name), []).append(measured)
                    client.indices.delete(index=index)
    finally:
        names = sorted(client.indices.get(index=f"{prefix}.*", allow_no_indices=True).body)
        if names:
            client.indices.delete(index=",".join(names))
        client.close()
    print(
        "| kind | representation | Lucene docs / record | bytes / record | "
        "encode µs / record | records/s (bulk, no refresh) | ES indexing µs / record | "
        "ES CPU µs / record |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, name in itertools.product(kinds, shapes):
        runs = results[(kind, name)]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        def best(key: str, runs: list[dict[str, float]] = runs) -> float:
            # Times: the least disturbed round (other load only ever adds to them).
            values = [run[key] for run in runs]
            return max(values) if key == "records_per_s" else min(values)

        print(
            f"| {kind} | {name} | {median('lucene_docs'):.1f} | {median('bytes'):,.0f} | "
            f"{best('encode_us'):,.0f} | {best('records_per_s'):,.0f} | "
            f"{best('indexing_us'):,.0f} | {best('es_cpu_us'):,.0f} |"
        )


if __name__ == "__main__":
    main()
