"""How the Elasticsearch writer reads a bulk answer and what it sends again (no cluster)."""

from __future__ import annotations

from typing import Any

from tessera.storage.elastic.bulk import Operation, _classify, _with_later_operations


def test_expected_conflicts_pass_overload_is_retried_and_refusals_fail_their_owner() -> None:
    ops = [
        Operation(0, "create", "i", "e-1", b"{}"),
        Operation(1, "create", "i", "e-2", b"{}"),
        Operation(2, "delete", "i", "gone"),
        Operation(3, "index", "i", "p-1", b"{}"),
        Operation(4, "index", "i", "p-2", b"{}"),
    ]
    items: list[dict[str, Any]] = [
        {"create": {"status": 201}},
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"delete": {"status": 404}},
        {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "x"}}},
    ]
    failures: dict[int, str] = {}

    retry = _classify(ops, items, failures)

    assert retry == [ops[3]]
    assert list(failures) == [4]
    assert "mapper_parsing_exception" in failures[4]


def test_a_retried_operation_takes_the_later_ones_on_its_document_along() -> None:
    # A delete of p-1 failed while a later write of p-1 succeeded: sending the delete again
    # alone would remove the newer write, so the write goes again after it.
    delete = Operation(0, "delete", "i", "p-1")
    other = Operation(1, "index", "i", "p-2", b"{}")
    write = Operation(2, "index", "i", "p-1", b"{}")
    elsewhere = Operation(3, "index", "j", "p-1", b"{}")

    again = _with_later_operations([delete, other, write, elsewhere], [delete])

    assert again == [delete, write]
