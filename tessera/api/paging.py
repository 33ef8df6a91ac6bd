"""The paging parameters of the management API's lists (``?limit=&offset=``).

Every offset has an upper bound: an unbounded one reached the stores as a number no database
takes (SQLite's integers end at 2**63 - 1), and a 500 instead of a clear 422. A million rows
is past any list anyone pages through by hand; search has its own, smaller bound (search.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_LIST_OFFSET = 1_000_000

ListOffset = Annotated[
    int, Query(ge=0, le=MAX_LIST_OFFSET, description="Rows to skip (at most 1,000,000)")
]
