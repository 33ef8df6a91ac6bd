"""Event types Tessera understands without configuration, and what each maps onto the profile.

Their mappings always apply to events of their type. Custom mapping rules for the same type
run after them, so a custom rule adds to a built-in one and, writing the same path, has the last
word. docs/event-types.md describes each type for people who send events.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from tessera.model.processing import FieldMapping, MappingRule

BUILTIN_ID_PREFIX = "builtin:"
# Built-in rules are not stored; they carry this fixed creation time and no tenant.
_BUILTIN_CREATED = datetime(1970, 1, 1, tzinfo=UTC)


class BuiltinEventType(msgspec.Struct, kw_only=True):
    type: str
    description: str
    # The event properties it reads, and what each should hold.
    properties: dict[str, str]
    mappings: list[FieldMapping]


_IDENTITY_PROPERTIES = {
    "email": "e-mail address; a merge key (profiles with the same one are merged)",
    "phone": "phone number; a merge key",
    "customer_id": "your own id for the customer; a merge key",
    "name": "full name",
    "first_name": "first name",
    "last_name": "last name",
    "traits": "an object merged into the profile's traits",
}
_IDENTITY_MAPPINGS = [
    FieldMapping(event="properties.email", op="equals", profile="data.contact.email.main"),
    FieldMapping(event="properties.phone", op="equals", profile="data.contact.phone.main"),
    FieldMapping(event="properties.customer_id", op="equals", profile="data.identifier.id"),
    FieldMapping(event="properties.name", op="equals", profile="data.pii.name"),
    FieldMapping(event="properties.first_name", op="equals", profile="data.pii.first_name"),
    FieldMapping(event="properties.last_name", op="equals", profile="data.pii.last_name"),
    FieldMapping(event="properties.traits", op="merge", profile="traits"),
]
_PURCHASE_PROPERTIES = {
    "total": "the amount paid (a number or numeric string); else 'value', else 'revenue'",
    "value": "used when 'total' is missing",
    "revenue": "used when 'total' and 'value' are missing",
    "order_id": "the order's id",
}
_PURCHASE_MAPPINGS = [
    # value 0: a purchase without an amount still counts as an order but adds nothing to ltv.
    FieldMapping(
        event=["properties.total", "properties.value", "properties.revenue"],
        op="increment",
        profile="stats.ltv",
        value=0,
    ),
    FieldMapping(op="increment", profile="stats.orders"),
    FieldMapping(op="equals", profile="data.purchases.last_time", value="{{ event.time }}"),
    FieldMapping(event="properties.order_id", op="equals", profile="data.purchases.last_order_id"),
]
_CONSENT_PROPERTIES = {"type": "the consent's name, e.g. 'marketing' (letters, digits, '_', '-')"}


def _consent(granted: bool) -> list[FieldMapping]:
    return [
        FieldMapping(
            op="equals",
            profile="consents.{properties.type}",
            value={"granted": granted, "time": "{{ event.time }}"},
        )
    ]


BUILTIN_EVENT_TYPES: tuple[BuiltinEventType, ...] = (
    BuiltinEventType(
        type="identify",
        description="Who the visitor is: contact details, names and traits.",
        properties=_IDENTITY_PROPERTIES,
        mappings=_IDENTITY_MAPPINGS,
    ),
    BuiltinEventType(
        type="sign-in",
        description="The visitor signed in; carries the same details as identify.",
        properties=_IDENTITY_PROPERTIES,
        mappings=_IDENTITY_MAPPINGS,
    ),
    BuiltinEventType(
        type="sign-up",
        description="The visitor created an account; carries the same details as identify.",
        properties=_IDENTITY_PROPERTIES,
        mappings=_IDENTITY_MAPPINGS,
    ),
    BuiltinEventType(
        type="page-view",
        description="A page was viewed: counts views.",
        properties={},
        mappings=[FieldMapping(op="increment", profile="stats.views")],
    ),
    BuiltinEventType(
        type="purchase",
        description="An order was paid: lifetime value, order count, last purchase.",
        properties=_PURCHASE_PROPERTIES,
        mappings=_PURCHASE_MAPPINGS,
    ),
    BuiltinEventType(
        type="order-completed",
        description="Same as purchase.",
        properties=_PURCHASE_PROPERTIES,
        mappings=_PURCHASE_MAPPINGS,
    ),
    BuiltinEventType(
        type="add-to-cart",
        description="A product was added to the cart: counts additions.",
        properties={},
        mappings=[FieldMapping(op="increment", profile="stats.cart_additions")],
    ),
    BuiltinEventType(
        type="consent-granted",
        description="The visitor granted a consent: consents.<type> = {granted: true, time}.",
        properties=_CONSENT_PROPERTIES,
        mappings=_consent(True),
    ),
    BuiltinEventType(
        type="consent-revoked",
        description="The visitor revoked a consent: consents.<type> = {granted: false, time}.",
        properties=_CONSENT_PROPERTIES,
        mappings=_consent(False),
    ),
)

_RULES: dict[str, MappingRule] = {
    builtin.type: MappingRule(
        tenant="",
        id=f"{BUILTIN_ID_PREFIX}{builtin.type}",
        name=f"built-in {builtin.type}",
        event_type=builtin.type,
        created=_BUILTIN_CREATED,
        mappings=builtin.mappings,
    )
    for builtin in BUILTIN_EVENT_TYPES
}


def builtin_mapping_rule(event_type: str) -> MappingRule | None:
    """The built-in mapping of a (normalised) event type, or None when it has none.

    The rule is shared: callers read it and never change it."""
    return _RULES.get(event_type)


def is_builtin(event_type: str) -> bool:
    return event_type in _RULES
