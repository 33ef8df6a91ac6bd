"""The "realistic" automation of the core benchmark: 20 rules, 8 workflows, 3 segments.

It is meant to cost what a shop's first real rule set would, without ever leaving the machine:
every action is a built-in one that works on the request's documents (traits, interests,
segments, templates, arithmetic, URL and pattern parsing, debug logging). Nothing calls a web
service, sends mail or waits.

The rules listen to the event types the load generator sends (``loadgen/main.go``,
``pickType``: 40% page-view, 30% product-view, 20% add-to-cart, 10% purchase; every event has a
price from 0.99 to 300.98, a sku and a category; carts and purchases a quantity of 1 to 3).
Most rules hold for every event of their type, some only for part of them (a condition on the
price or quantity), and some are there to be passed over: another source, a consent nobody
gave, a segment only returning visitors reach. From the mix above, the rules give
0.4 x 2.33 + 0.3 x 3.33 + 0.2 x 3.33 + 0.1 x 3.67 = 2.97 workflow runs per event, plus the
segment-bound rules for visitors already in a segment; the runner measures the real figure from
stored events (``metadata.automation.workflows``).
"""

from __future__ import annotations

import itertools
from typing import Any

# Event types and the share of events the load generator gives each (keep in step with
# loadgen/main.go).
EVENT_MIX = {"page-view": 0.4, "product-view": 0.3, "add-to-cart": 0.2, "purchase": 0.1}


def _node(node_id: str, action: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "action": action, "config": config}


def _edge(source: str, target: str, port: str = "payload") -> dict[str, Any]:
    return {"source": source, "target": target, "source_port": port}


def _chain(*nodes: dict[str, Any]) -> dict[str, Any]:
    """A straight line of nodes after a start node: each one's payload port to the next."""
    ids = ["start", *(n["id"] for n in nodes)]
    return {
        "nodes": [_node("start", "start"), *nodes],
        "edges": [_edge(a, b) for a, b in itertools.pairwise(ids)],
    }


def _workflows() -> list[dict[str, Any]]:
    page_view = _chain(
        _node("count", "increment_trait", path="profile@traits.page_views", by=1),
        _node("url", "parse_url", path="event@context.page.url", target="payload@url"),
        _node("path", "set_trait", path="profile@traits.last_path", value="{{ payload.url.path }}"),
    )
    remember = _chain(
        _node(
            "category",
            "set_trait",
            path="profile@traits.last_category",
            value="{{ event.properties.category }}",
        ),
        _node(
            "note",
            "template",
            template="{{ event.type }} {{ event.properties.sku }} at {{ event.properties.price }}",
            target="payload@note",
        ),
        _node("log", "log", message="{{ payload.note }}", level="debug"),
    )
    sku = {
        "nodes": [
            _node("start", "start"),
            _node(
                "match",
                "regex_match",
                pattern=r"^sku-(?P<number>\d+)$",
                path="event@properties.sku",
                target="payload@match",
            ),
            _node(
                "keep",
                "set_trait",
                path="profile@traits.last_sku_number",
                value="{{ payload.match.number }}",
            ),
        ],
        "edges": [_edge("start", "match"), _edge("match", "keep", "true")],
    }
    interests = {
        "nodes": [
            _node("start", "start"),
            _node(
                "fashion", "condition", condition='event@properties.category IN ("shoes", "bags")'
            ),
            _node("more-fashion", "increase_interest", interest="fashion", value=1),
            _node("watch", "condition", condition='event@properties.category == "watches"'),
            _node("watches", "add_interest", interest="watches", value=1),
        ],
        "edges": [
            _edge("start", "fashion"),
            _edge("fashion", "more-fashion", "true"),
            _edge("fashion", "watch", "false"),
            _edge("watch", "watches", "true"),
        ],
    }
    cart = _chain(
        _node("count", "increment_trait", path="profile@traits.cart_adds", by=1),
        _node(
            "line",
            "calculator",
            expression="event@properties.price * event@properties.quantity",
            target="payload@line",
        ),
        _node(
            "keep", "set_trait", path="profile@traits.last_cart_line", value="{{ payload.line }}"
        ),
    )
    purchase = {
        "nodes": [
            _node("start", "start"),
            _node("count", "increment_trait", path="profile@traits.purchases", by=1),
            _node(
                "order",
                "set_trait",
                path="profile@traits.last_order",
                value="{{ event.properties.order_id }}",
            ),
            _node("has-spent", "property_exists", path="profile@traits.spent"),
            _node("first", "set_trait", path="profile@traits.spent", value=0),
            _node(
                "spend",
                "calculator",
                expression="round(profile@traits.spent + event@properties.price * "
                "event@properties.quantity, 2)",
                target="profile@traits.spent",
            ),
            _node("repeat", "condition", condition="profile@traits.purchases >= 2"),
            _node("segment", "add_segment", segment="repeat-buyer"),
            _node("log", "log", message="repeat buyer {{ profile.id }}", level="debug"),
        ],
        "edges": [
            _edge("start", "count"),
            _edge("count", "order"),
            _edge("order", "has-spent"),
            _edge("has-spent", "spend", "true"),
            _edge("has-spent", "first", "false"),
            _edge("first", "spend"),
            _edge("spend", "repeat"),
            _edge("repeat", "segment", "true"),
            _edge("segment", "log"),
        ],
    }
    premium = {
        "nodes": [
            _node("start", "start"),
            _node("pricey", "condition", condition="event@properties.price > 250"),
            _node("interest", "add_interest", interest="premium", value=1),
            _node("mark", "set_trait", path="profile@traits.premium_seen", value=True),
        ],
        "edges": [
            _edge("start", "pricey"),
            _edge("pricey", "interest", "true"),
            _edge("interest", "mark"),
        ],
    }
    welcome = _chain(
        _node(
            "keep",
            "set_trait",
            path="profile@traits.welcomed_to",
            value="{{ event.properties.name }}",
        ),
        _node(
            "log",
            "log",
            message="{{ profile.id }} entered {{ event.properties.segment }}",
            level="debug",
        ),
    )
    return [
        {"id": "wf-page-view", "name": "Count page views", "draft": page_view},
        {"id": "wf-remember", "name": "Remember the last product", "draft": remember},
        {"id": "wf-sku", "name": "Product number from the sku", "draft": sku},
        {"id": "wf-interests", "name": "Interests by category", "draft": interests},
        {"id": "wf-cart", "name": "Cart lines", "draft": cart},
        {"id": "wf-purchase", "name": "Purchases and spending", "draft": purchase},
        {"id": "wf-premium", "name": "Premium shoppers", "draft": premium},
        {"id": "wf-welcome", "name": "Welcome to a segment", "draft": welcome},
    ]


SEGMENTS: list[dict[str, Any]] = [
    # No event types: evaluated live on every request, the costliest kind.
    {
        "id": "engaged-browser",
        "name": "Engaged browser",
        "condition": "profile@traits.page_views >= 5",
    },
    {
        "id": "cart-builder",
        "name": "Cart builder",
        "condition": "profile@traits.cart_adds >= 2",
        "event_types": ["add-to-cart"],
    },
    {
        "id": "big-spender",
        "name": "Big spender",
        "condition": "profile@traits.spent >= 300",
        "event_types": ["purchase"],
    },
]


def _rule(number: int, event_type: str, workflow: str, **more: Any) -> dict[str, Any]:
    rule_id = f"bench-rule-{number:02d}"
    return {
        "id": rule_id,
        "name": rule_id,
        "event_type": event_type,
        "workflow_id": workflow,
        **more,
    }


# Comments: the share of that type's events each rule runs for.
RULES: list[dict[str, Any]] = [
    _rule(1, "page-view", "wf-page-view"),  # all
    _rule(2, "page-view", "wf-remember"),  # all
    _rule(3, "page-view", "wf-premium", condition="event@properties.price > 200"),  # ~1/3
    _rule(4, "page-view", "wf-page-view", source_id="mobile-app"),  # none: another source
    _rule(5, "page-view", "wf-sku", segment="engaged-browser"),  # returning visitors only
    _rule(6, "product-view", "wf-remember"),  # all
    _rule(7, "product-view", "wf-sku"),  # all
    _rule(8, "product-view", "wf-interests"),  # all
    _rule(9, "product-view", "wf-premium", condition="event@properties.price > 200"),  # ~1/3
    _rule(10, "add-to-cart", "wf-cart"),  # all
    _rule(11, "add-to-cart", "wf-interests"),  # all
    _rule(12, "add-to-cart", "wf-remember"),  # all
    _rule(13, "add-to-cart", "wf-sku", condition="event@properties.quantity >= 3"),  # 1/3
    _rule(14, "add-to-cart", "wf-premium", required_consents=["marketing"]),  # none: no consent
    _rule(15, "purchase", "wf-purchase"),  # all
    _rule(16, "purchase", "wf-remember"),  # all
    _rule(17, "purchase", "wf-interests"),  # all
    _rule(18, "purchase", "wf-premium", condition="event@properties.price > 100"),  # ~2/3
    _rule(19, "purchase", "wf-sku", segment="big-spender"),  # returning big spenders only
    _rule(20, "segment-entered", "wf-welcome"),  # internal events, once per segment entered
]


def setup_requests() -> list[tuple[str, dict[str, Any]]]:
    """The (path, body) of every POST that builds the automation, in an order that works:
    workflows before the rules that name them."""
    calls: list[tuple[str, dict[str, Any]]] = []
    calls += [("/workflow", {**wf, "deploy": True}) for wf in _workflows()]
    calls += [("/segment", segment) for segment in SEGMENTS]
    calls += [("/rule", rule) for rule in RULES]
    return calls


def describe() -> dict[str, int]:
    return {"rules": len(RULES), "workflows": len(_workflows()), "segments": len(SEGMENTS)}
