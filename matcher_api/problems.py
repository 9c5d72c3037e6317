"""Errors as RFC 9457 problem+json: every error of the service, and the handlers that make them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from matcher import (
    InputValidationError,
    MatcherError,
    Problem,
    access,
    limits,
)
from matcher.partnerships import PartnershipStateError
from matcher.store import (
    AlreadyExistsError,
    HoldStateError,
    LinkedReportsError,
    NotEnoughCapacityError,
    NotFoundError,
    PlanStateError,
    StoreBusyError,
    TooManyHoldsError,
    VersionConflictError,
)

from .bodies import IdempotencyKeyReused

logger = logging.getLogger("matcher.api")

#: The media type of every error (RFC 9457).
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str = "", **extra: Any) -> Response:
    """Return an RFC 9457 problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail} | extra
    return Response(json.dumps(body), status=status, mimetype=PROBLEM)


def _problems(exc: InputValidationError) -> list[dict[str, Any]]:
    return [p.to_dict() for p in exc.problems]


def register_errors(app: Flask) -> None:
    """Answer every error of ``app`` as problem+json (never a stack trace)."""

    @app.errorhandler(InputValidationError)
    def _invalid(exc: InputValidationError) -> Response:
        return problem(
            400,
            "Invalid input",
            f"{len(exc.problems)} problem(s) in the input",
            problems=_problems(exc),
        )

    @app.errorhandler(VersionConflictError)
    def _stale(exc: VersionConflictError) -> Response:
        return problem(412, "Precondition Failed", str(exc))

    @app.errorhandler(NotFoundError)
    def _missing(exc: NotFoundError) -> Response:
        return problem(404, "Not Found", str(exc))

    @app.errorhandler(AlreadyExistsError)
    @app.errorhandler(PlanStateError)
    @app.errorhandler(HoldStateError)
    @app.errorhandler(TooManyHoldsError)
    @app.errorhandler(LinkedReportsError)
    @app.errorhandler(PartnershipStateError)
    def _conflict(exc: MatcherError) -> Response:
        return problem(409, "Conflict", str(exc))

    @app.errorhandler(NotEnoughCapacityError)
    def _full(exc: NotEnoughCapacityError) -> Response:
        return problem(409, "Conflict", str(exc), free_capacity=exc.free, partner_id=exc.partner_id)

    @app.errorhandler(access.ForbiddenError)
    def _forbidden(exc: access.ForbiddenError) -> Response:
        return problem(403, "Forbidden", exc.detail, problems=[p.to_dict() for p in exc.problems])

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        return problem(
            400,
            "Invalid request",
            f"the JSON body is nested too deep; at most {limits.MAX_JSON_DEPTH} levels",
        )

    @app.errorhandler(StoreBusyError)
    def _busy(exc: StoreBusyError) -> Response:
        return problem(503, "Service Unavailable", str(exc))

    @app.errorhandler(IdempotencyKeyReused)
    def _reused(exc: IdempotencyKeyReused) -> Response:
        why = "was sent before with another request body; use a new key for a new request"
        return unprocessable(
            [Problem("Idempotency-Key header", None, "Idempotency-Key", exc.key, why)], str(exc)
        )

    @app.errorhandler(MatcherError)
    def _matcher(exc: MatcherError) -> Response:
        return problem(422, "Cannot process", str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        extra: dict[str, Any] = {}
        data = getattr(exc, "data", None)
        if isinstance(data, dict) and "messages" in data:  # webargs / marshmallow validation
            sent = request.get_json(silent=True) if request.is_json else None
            extra["problems"] = [
                {
                    "file": None,
                    "row": None,
                    "field": field,
                    "value": _value_at(sent if where == "json" else request.args, field),
                    "reason": "; ".join(msgs),
                }
                for where, location in data["messages"].items()
                for field, msgs in _flatten(location).items()
            ]
            return problem(400, "Invalid request", "the request parameters are invalid", **extra)
        return problem(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:  # never a stack trace in a response
        logger.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error occurred")


def _value_at(data: Any, dotted: str) -> Any:
    """Return the scalar sent at ``a.0.b`` of a request body or query (else None)."""
    for part in dotted.split("."):
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data if isinstance(data, str | int | float | bool) else None


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for k, v in messages.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix or "body"] = [
            str(m) for m in (messages if isinstance(messages, list) else [messages])
        ]
    return out


def too_many(wait: int, detail: str) -> Response:
    """Return a 429 problem+json telling the client how many seconds to wait."""
    resp = problem(429, "Too Many Requests", detail)
    resp.headers["Retry-After"] = str(int(wait))
    return resp


def unprocessable(problems: list[Problem], detail: str) -> Response:
    """Return a 422 problem+json: the request is well formed but does not fit the data."""
    return problem(422, "Unprocessable Content", detail, problems=[p.to_dict() for p in problems])
