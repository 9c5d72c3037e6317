"""Request bodies and headers: JSON objects, record fields, ``If-Match``.

A record is validated by matcher's own readers (the CLI's rules), not by a schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from flask import Response, g, request

from matcher import (
    InputValidationError,
    MatcherError,
    Problem,
)
from matcher.io import load_json_document
from matcher.store import (
    etag,
    parse_etag,
)


def with_etag(rec: Mapping[str, Any], entity_id: str) -> Response:
    """Return a record as JSON with its ``ETag`` (what ``If-Match`` sends back)."""
    resp = Response(json.dumps(dict(rec)), mimetype="application/json")
    resp.headers["ETag"] = etag(entity_id, int(rec["version"]))
    return resp


def json_body() -> dict[str, Any]:
    """Return the request's JSON object (415 unless JSON; 400 if malformed or too deep)."""
    if not request.is_json:
        from werkzeug.exceptions import UnsupportedMediaType

        raise UnsupportedMediaType("send a JSON body with 'Content-Type: application/json'")
    body = g.get("json_body")  # parsed with matcher's bounds by authorize
    if body is None:
        body = load_json_document(request.get_data(cache=True), "request body")
    if not isinstance(body, dict):
        raise InputValidationError(
            [Problem("request body", None, None, None, "malformed JSON: expected a JSON object")]
        )
    return body


def listish(value: Any) -> Any:
    """Return a JSON list of names as the ';'-joined text the readers take."""
    return ";".join(map(str, value)) if isinstance(value, list) else value


#: Fields a client may send back as read but that it cannot set.
_READ_ONLY = frozenset({"version", "coarsened", "updated_at", "cluster_id"})
_NUMERIC = frozenset({"lat", "lon", "demand", "capacity", "radius_km", "severity"})


def record_body(body: Mapping[str, Any], fields: tuple[str, ...], key: str, path_id: str | None):
    """Check a record body: known fields only, JSON types, and the id of the path.

    Returns the body without read-only fields, with ``key`` set to ``path_id`` when given.
    """
    problems = [
        Problem("request body", None, str(name), None,
                f"unknown field; the fields are {', '.join(fields)}")
        for name in sorted(map(str, body))
        if name not in fields and name not in _READ_ONLY
    ]  # fmt: skip
    for name in sorted(_NUMERIC & set(body)):
        value = body[name]
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            problems.append(
                Problem("request body", None, name, str(value)[:40], "must be a JSON number")
            )
    for name in ("categories", "languages"):
        value = body.get(name)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            problems.append(
                Problem("request body", None, name, None, "must be a string or a list of strings")
            )
        elif isinstance(value, dict | bool):
            problems.append(
                Problem("request body", None, name, None, "must be a string or a list of strings")
            )
    for name in set(fields) - _NUMERIC - {"categories", "languages"}:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(Problem("request body", None, name, None, "must be a JSON string"))
    given = body.get(key)
    if path_id is not None and given is not None and str(given).strip() != path_id:
        problems.append(
            Problem("request body", None, key, str(given)[:40],
                    f"must be {path_id!r}, the id in the path (ids cannot change)")
        )  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    out = {k: listish(v) for k, v in body.items() if k not in _READ_ONLY}
    if path_id is not None:
        out[key] = path_id
    return out


def validated(body: dict[str, Any], reader: Callable[..., Any], name: str) -> dict[str, Any]:
    """Validate one record with matcher's own validation (same rules as the CLI)."""
    frame = reader(pd.DataFrame([body]), name=name).frame
    return frame.drop(columns="geometry").iloc[0].to_dict()


def if_match() -> int:
    """Return the version a write expects, from ``If-Match``.

    428 when missing; 400 when it is not an entity tag; 412 when it is one that can
    never match: a weak tag (``W/"3"``; ``If-Match`` uses strong comparison, RFC 9110
    13.1.1), ``*`` or a list.
    """
    header = request.headers.get("If-Match")
    if not header:
        from werkzeug.exceptions import PreconditionRequired

        raise PreconditionRequired("send the resource's ETag in If-Match to update or delete it")
    version = parse_etag(header)
    if version is not None:
        return version
    text = header.strip()
    if len(text) <= 200 and re.fullmatch(r'(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*|\*', text):
        from werkzeug.exceptions import PreconditionFailed

        raise PreconditionFailed(
            "If-Match must be the strong ETag of the current version, as a GET returns it "
            '(e.g. "3"); weak tags, * and lists never match a write'
        )
    raise InputValidationError(
        [Problem("If-Match", None, "If-Match", text[:40], 'expected an ETag such as "3"')]
    )


#: Longest ``Idempotency-Key`` (printable ASCII, as the IETF draft's examples).
MAX_IDEMPOTENCY_KEY = 255


def idempotency_key() -> str | None:
    """Return the request's ``Idempotency-Key`` (None when absent; 400 when unusable)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip().strip('"')
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not all(" " < c <= "~" for c in key):
        raise InputValidationError(
            [
                Problem("Idempotency-Key header", None, "Idempotency-Key", raw[:40],
                        f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters "
                        "without spaces (e.g. a UUID)")  # fmt: skip
            ]
        )
    return key


def request_digest(body: Any) -> str:
    """Return a digest of a JSON request body (key order ignored), to compare retries."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


class IdempotencyKeyReused(MatcherError):
    """An ``Idempotency-Key`` sent again with another request body (422)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__("the Idempotency-Key belongs to another request")


def kept_answer(st: Any, key: str, digest: str, scope: str = "") -> tuple[int, Any] | None:
    """Return ``(status, answer)`` kept for the caller's ``Idempotency-Key`` (None: a new one).

    ``scope`` keeps the keys of different routes apart: it ends with a space, which no key
    holds, so no key of one route can name another's. Call it inside the write
    transaction that will do the request's writes and :func:`keep_answer` (so that both or
    neither are kept).

    Raises
    ------
    IdempotencyKeyReused
        The key was sent before with another body.
    """
    prior = st.idempotent_response(g.key_id, scope + key)
    if prior is None:
        return None
    if prior[0] != digest:
        raise IdempotencyKeyReused(key)
    return prior[1], json.loads(prior[2])


def keep_answer(st: Any, key: str, digest: str, status: int, answer: Any, scope: str = "") -> None:
    """Keep the answer to a request made with an ``Idempotency-Key`` (see :func:`kept_answer`)."""
    st.remember_response(g.key_id, scope + key, digest, status, json.dumps(answer))
