"""The OpenAPI 3.1 document of a worker's HTTP API, served by every worker at
``/openapi.json``.

It describes what ``agents.profiles``, ``agents.catalog`` and ``agents.web`` answer; the
profile fields are those of ``core.profile.member_profile``, the catalog's those of
``core.catalog.CatalogView.listing``. Like the event contracts, it only grows: new
fields are added to the answers, never taken away, so clients must ignore fields they do
not know. There is no ``servers`` entry: the API is at the address the document was
fetched from, on any worker.
"""

from __future__ import annotations

from typing import Any

from loyalty.core.profile import DEFAULT_LEDGER_LIMIT, MAX_LEDGER_LIMIT
from loyalty.schemas.ids import ID_PATTERN, MAX_ID_LENGTH

# The ``error`` codes of the API's error answers.
MALFORMED_MEMBER_ID = "malformed_member_id"
INVALID_LIMIT = "invalid_limit"
UNKNOWN_MEMBER = "unknown_member"
OWNER_UNAVAILABLE = "owner_unavailable"
CATALOG_LOADING = "catalog_loading"
NOT_FOUND = "not_found"
INVALID_REQUEST_TARGET = "invalid_request_target"

OWNER_HEADER = "Loyalty-Owner"
"""Response header: the URL of the worker that read the member from its table."""

EXAMPLE_MEMBER = "member-00001"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


_TIMESTAMP = {"type": "string", "format": "date-time"}
_LITERS = {"type": "number", "minimum": 0}
_AMOUNT = {"type": "number", "minimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
_SHARE = {"type": "number", "minimum": 0, "maximum": 1}
_RFM_SCORE = {"type": "integer", "minimum": 1, "maximum": 5}


def _object(properties: dict[str, Any], description: str) -> dict[str, Any]:
    """An object schema with every property required; further properties may appear."""
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "properties": properties,
    }


_ERROR = _object(
    {
        "error": {
            "type": "string",
            "enum": [
                MALFORMED_MEMBER_ID,
                INVALID_LIMIT,
                UNKNOWN_MEMBER,
                OWNER_UNAVAILABLE,
                CATALOG_LOADING,
                NOT_FOUND,
                INVALID_REQUEST_TARGET,
            ],
            "description": "What went wrong, for programs.",
        },
        "message": {"type": "string", "description": "What went wrong, for people."},
    },
    "An error answer.",
)

READINESS_CHECKS = ("running", "partitions_assigned", "tables_recovered", "catalog_ready")
"""What ``GET /health/ready`` checks, in the order its ``failing`` list names them."""

_LIVENESS = _object(
    {"status": {"type": "string", "enum": ["live", "crashed"]}},
    "Whether the worker's event loop answers and nothing crashed.",
)

_READINESS = _object(
    {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "failing": {
            "type": "array",
            "items": {"type": "string", "enum": list(READINESS_CHECKS)},
            "description": "The checks that fail: `running` (not stopping or crashed), "
            "`partitions_assigned` (holds a partition of the member input topics), "
            "`tables_recovered` (tables read up since the last rebalance, which is over), "
            "`catalog_ready` (catalog and reserved stock read up).",
        },
        "member_partitions": {
            **_COUNT,
            "description": "Partitions of the member input topics this worker holds.",
        },
    },
    "Whether the worker does its share of the work.",
)

_COUPON = _object(
    {
        "code": {"type": "string", "description": "Presented at a station in a sale."},
        "benefit": {
            "type": "string",
            "description": "`bonus_points` (credited on the sale) or `discount_percent` "
            "(applied by the POS); new benefits may appear.",
        },
        "value": {"type": "integer", "description": "Points, or percent off."},
        "source": {"type": "string", "description": "What issued it (e.g. `newsletter`)."},
        "issued_at": _TIMESTAMP,
        "expires_at": _TIMESTAMP,
    },
    "An issued coupon not used yet and not expired.",
)

_STATS = _object(
    {
        "liters_7d": _LITERS,
        "liters_30d": _LITERS,
        "liters_90d": _LITERS,
        "amount_7d": _AMOUNT,
        "amount_30d": _AMOUNT,
        "amount_90d": _AMOUNT,
        "sales_30d": _COUNT,
        "sales_90d": _COUNT,
        "last_sale_at": _nullable(_TIMESTAMP),
        "days_since_last_sale": _nullable(_COUNT),
        "favourite_fuel": {
            "type": ["string", "null"],
            "description": "Most litres in 90 days.",
        },
        "favourite_station": {
            "type": ["string", "null"],
            "description": "Most sales in 90 days; a tie goes to the most recent.",
        },
        "avg_liters_per_fill": _nullable(_LITERS),
        "daypart_shares_30d": _object(
            {name: _SHARE for name in ("morning", "midday", "evening", "night")},
            "Share of the sales of the last 30 days by time of day: morning 06-11, midday "
            "11-16, evening 16-22, night 22-06 (program time zone); all 0 without sales.",
        ),
        "lifetime_points": {"type": "integer"},
        "lifetime_liters": _LITERS,
        "lifetime_amount": _AMOUNT,
        "lifetime_sales": _COUNT,
    },
    "Rolling figures over the trailing 7, 30 and 90 days ending on `as_of` (event time), "
    "and lifetime totals. A figure that needs a sale is null before the first one.",
)

_RFM = _object(
    {
        "recency": _nullable(_RFM_SCORE),
        "frequency": _nullable(_RFM_SCORE),
        "monetary": _nullable(_RFM_SCORE),
        "score": {
            "type": ["string", "null"],
            "pattern": "^[1-5]{3}$",
            "description": "The three scores as one string, e.g. `534`.",
        },
    },
    "RFM scores, 1 (worst) to 5 (best), from the program file's thresholds; all null "
    "before the first sale or when the program has no thresholds.",
)

_PROFILE = _object(
    {
        "member_id": {"type": "string"},
        "as_of": {
            "type": "string",
            "format": "date",
            "description": "The day (program time zone) the day-dependent figures are for.",
        },
        "balance": {"type": "integer", "description": "Points balance."},
        "tier": {"type": "string"},
        "next_tier": {"type": ["string", "null"], "description": "Null at the top tier."},
        "points_to_next_tier": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Points still to earn within the tier window; null at the top.",
        },
        "referral_code": {"type": ["string", "null"]},
        "enrolled_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "Event time of the enrolment; null for a member on record without one.",
        },
        "stats": {"$ref": "#/components/schemas/Stats"},
        "rfm": {"$ref": "#/components/schemas/Rfm"},
        "segments": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The segments the member is in (sorted), as last evaluated: at "
            "the member's last event or by the last daily job.",
        },
        "active_coupons": {"type": "array", "items": {"$ref": "#/components/schemas/Coupon"}},
    },
    "A member's profile.",
)

_LEDGER_ENTRY = _object(
    {
        "member_id": {"type": "string"},
        "entry_id": {"type": "string", "format": "uuid"},
        "delta": {"type": "integer"},
        "balance_after": {"type": "integer"},
        "reason": {"type": "string"},
        "source_event_id": {"type": "string"},
        "program_version": {"type": "string"},
        "occurred_at": _TIMESTAMP,
        "processed_at": _TIMESTAMP,
    },
    "A ledger entry as the `loyalty.ledger` topic carries it.",
)

_LEDGER = _object(
    {
        "member_id": {"type": "string"},
        "entries": {
            "type": "array",
            "maxItems": MAX_LEDGER_LIMIT,
            "items": {"$ref": "#/components/schemas/LedgerEntry"},
            "description": "Newest first.",
        },
    },
    f"The member's most recent ledger entries (the engine keeps the last {MAX_LEDGER_LIMIT}).",
)

_REDEMPTION = _object(
    {
        "request_id": {"type": "string", "description": "The request's idempotency key."},
        "reward_id": {"type": "string"},
        "quantity": {"type": "integer", "minimum": 1},
        "points": {
            "type": "integer",
            "minimum": 0,
            "description": "What it costs: the reward's `cost_points` x `quantity` when requested.",
        },
        "status": {
            "type": "string",
            "description": "`held` (points set aside, stock being reserved), `confirmed`, "
            "`rejected`, `fulfilled` (delivered by the station) or `cancelled` (points and "
            "stock returned); new statuses may appear.",
        },
        "reason": {
            "type": ["string", "null"],
            "description": "Why it was rejected: `insufficient_points`, `out_of_stock`, "
            "`unknown_reward`, `inactive_reward`, `limit_reached`, ...; null otherwise.",
        },
        "station_id": {"type": "string", "description": "The station that asked."},
        "requested_at": {**_TIMESTAMP, "description": "Event time of the request."},
        "updated_at": {**_TIMESTAMP, "description": "Event time of the last status change."},
    },
    "A redemption request as the member's partition records it.",
)

_REDEMPTIONS = _object(
    {
        "member_id": {"type": "string"},
        "redemptions": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/Redemption"},
            "description": "Newest request first. The pending requests and the most recent "
            "others are kept.",
        },
    },
    "A member's redemption requests and where each one stands.",
)

_CATALOG_REWARD = _object(
    {
        "reward_id": {"type": "string"},
        "name": {
            "type": "string",
            "description": "Display name in the requested `locale`, else in English.",
        },
        "cost_points": {"type": "integer", "minimum": 1, "description": "Points per unit."},
        "stock": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Units the catalog offers in all; null: unlimited.",
        },
        "remaining": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Units still available: `stock` less the units reserved by "
            "redemptions, as this worker last read them (milliseconds behind); null: "
            "unlimited.",
        },
        "active": {
            "type": "boolean",
            "description": "False: retired, listed but not redeemable.",
        },
        "per_member_limit": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "Units one member may redeem in all; null: no limit.",
        },
    },
    "A reward of the catalog (`loyalty.catalog`) with its live stock.",
)

_CATALOG = {
    "type": "array",
    "items": {"$ref": "#/components/schemas/CatalogReward"},
    "description": "Every reward, retired ones included, by `reward_id`.",
}


def _json_answer(description: str, schema_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
        },
        **extra,
    }


_OWNER_HEADERS = {OWNER_HEADER: {"$ref": "#/components/headers/Owner"}}

_MEMBER_ERRORS = {
    "404": {"$ref": "#/components/responses/UnknownMember"},
    "503": {"$ref": "#/components/responses/OwnerUnavailable"},
}

OPENAPI_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Loyalty Stream worker API",
        "version": "1",
        "description": "Served by every worker on `LOYALTY_WEB_PORT`. A member request "
        "may be sent to any worker: the worker owning the member's partition answers it "
        "(the others forward the request to it). During a rebalance, while the owner is "
        "not known, the answer is 503 with `Retry-After`. A path not described here "
        f"answers 404 `{NOT_FOUND}`, and a request line whose target is not a path "
        f"(`GET http://host/...`) 400 `{INVALID_REQUEST_TARGET}`. A connection is closed "
        "when its client takes longer than `LOYALTY_HTTP_TIMEOUT_S` to send a whole "
        "request.",
    },
    "paths": {
        "/members/{member_id}": {
            "get": {
                "operationId": "getMemberProfile",
                "summary": "A member's balance, tier, stats, RFM scores, segments, coupons.",
                "parameters": [{"$ref": "#/components/parameters/MemberId"}],
                "responses": {
                    "200": _json_answer("The member's profile.", "Profile", headers=_OWNER_HEADERS),
                    "400": {"$ref": "#/components/responses/MalformedMemberId"},
                    **_MEMBER_ERRORS,
                },
            }
        },
        "/members/{member_id}/ledger": {
            "get": {
                "operationId": "getMemberLedger",
                "summary": "A member's most recent ledger entries, newest first.",
                "parameters": [
                    {"$ref": "#/components/parameters/MemberId"},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "How many entries at most.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LEDGER_LIMIT,
                            "default": DEFAULT_LEDGER_LIMIT,
                        },
                    },
                ],
                "responses": {
                    "200": _json_answer("The entries.", "Ledger", headers=_OWNER_HEADERS),
                    "400": _json_answer(
                        f"`{MALFORMED_MEMBER_ID}`, or `{INVALID_LIMIT}`: `limit` is not a "
                        f"whole number from 1 to {MAX_LEDGER_LIMIT}.",
                        "Error",
                    ),
                    **_MEMBER_ERRORS,
                },
            }
        },
        "/members/{member_id}/redemptions": {
            "get": {
                "operationId": "getMemberRedemptions",
                "summary": "A member's redemption requests and their status, newest first.",
                "parameters": [{"$ref": "#/components/parameters/MemberId"}],
                "responses": {
                    "200": _json_answer(
                        "The member's redemptions.", "Redemptions", headers=_OWNER_HEADERS
                    ),
                    "400": {"$ref": "#/components/responses/MalformedMemberId"},
                    **_MEMBER_ERRORS,
                },
            }
        },
        "/catalog": {
            "get": {
                "operationId": "getCatalog",
                "summary": "The rewards catalog with the live stock of each reward.",
                "description": "Answered by any worker from its own copy of the catalog.",
                "parameters": [
                    {
                        "name": "locale",
                        "in": "query",
                        "required": False,
                        "description": "Locale of the display names (`es`, `pl`, `es-ES`, "
                        "...); a reward without a name in it shows its English name.",
                        "schema": {"type": "string", "default": "en"},
                    }
                ],
                "responses": {
                    "200": _json_answer("The catalog.", "Catalog"),
                    "503": _json_answer(
                        f"`{CATALOG_LOADING}`: the worker has just started and is still "
                        "reading the catalog and the reserved stock; try again after "
                        "`Retry-After` seconds.",
                        "Error",
                        headers={"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "This worker's Prometheus metrics (counters are per process).",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/health/live": {
            "get": {
                "operationId": "getLiveness",
                "summary": "Liveness probe: 200 while the worker answers and nothing crashed.",
                "responses": {
                    "200": _json_answer("The worker is live.", "Liveness"),
                    "503": _json_answer(
                        "It crashed and exits within `LOYALTY_SHUTDOWN_GRACE_S`.", "Liveness"
                    ),
                },
            }
        },
        "/health/ready": {
            "get": {
                "operationId": "getReadiness",
                "summary": "Readiness probe: 200 when the worker holds partitions of the "
                "member input topics, its tables are recovered and its catalog is read.",
                "responses": {
                    "200": _json_answer("The worker is ready.", "Readiness"),
                    "503": _json_answer(
                        "Not ready: `failing` names the checks that fail (a spare worker "
                        "beyond the partition count, a rebalance, a recovery).",
                        "Readiness",
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "parameters": {
            "MemberId": {
                "name": "member_id",
                "in": "path",
                "required": True,
                "description": f"The member id: 1-{MAX_ID_LENGTH} characters of the id grammar "
                "ingest accepts (A-Z a-z 0-9 . _ : @ + -, starting with a letter or digit).",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_LENGTH,
                    "pattern": f"^{ID_PATTERN}$",
                },
                "example": EXAMPLE_MEMBER,
            }
        },
        "headers": {
            "Owner": {
                "description": "URL (`LOYALTY_WEB_URL`) of the worker that read the member "
                "from its table: the owner of the member's partition.",
                "schema": {"type": "string"},
            },
            "RetryAfter": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            },
        },
        "responses": {
            "MalformedMemberId": _json_answer(
                f"`{MALFORMED_MEMBER_ID}`: the member id is empty, longer than "
                f"{MAX_ID_LENGTH} characters or has a character outside the id grammar "
                "(A-Z a-z 0-9 . _ : @ + -, starting with a letter or digit).",
                "Error",
            ),
            "UnknownMember": _json_answer(
                f"`{UNKNOWN_MEMBER}`: no member with this id is on record (never seen, or erased).",
                "Error",
            ),
            "OwnerUnavailable": _json_answer(
                f"`{OWNER_UNAVAILABLE}`: the worker owning the member is not known or not "
                "reachable right now (the group is rebalancing, or the owner is recovering "
                "its tables); try again after `Retry-After` seconds.",
                "Error",
                headers={"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
            ),
        },
        "schemas": {
            "Profile": _PROFILE,
            "Stats": _STATS,
            "Rfm": _RFM,
            "Coupon": _COUPON,
            "Ledger": _LEDGER,
            "LedgerEntry": _LEDGER_ENTRY,
            "Redemptions": _REDEMPTIONS,
            "Redemption": _REDEMPTION,
            "Catalog": _CATALOG,
            "CatalogReward": _CATALOG_REWARD,
            "Error": _ERROR,
            "Liveness": _LIVENESS,
            "Readiness": _READINESS,
        },
    },
}
