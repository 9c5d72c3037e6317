"""The OpenAPI side of the service: its blueprints, error responses and shared parameters.

Every route module makes its blueprint with :func:`blueprint` (URL prefix ``/api/v1``,
authorization before every request, errors documented as RFC 9457 problem+json) and
documents the errors each operation can answer with :meth:`ApiBlueprint.answers`.
"""

from __future__ import annotations

import copy
import http
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser

from matcher import limits

from .auth import authorize
from .problems import PROBLEM
from .schemas import PATH_ID_PATTERN, ProblemSchema


class _ArgumentsParser(FlaskParser):
    """webargs' parser; an invalid query or body is a 400, as every other invalid input."""

    DEFAULT_VALIDATION_STATUS = 400


class ApiBlueprint(Blueprint):
    """A flask-smorest blueprint of the API: invalid arguments are 400."""

    ARGUMENTS_PARSER = _ArgumentsParser()

    def answers(self, *statuses: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Document the problem+json errors an operation answers (besides its success)."""

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            for status in statuses:
                func = self.alt_response(status, response=http.HTTPStatus(status).name)(func)
            return func

        return decorate


def blueprint(name: str, import_name: str, description: str) -> ApiBlueprint:
    """Return a blueprint of API v1 whose every request is authorized first (:mod:`.auth`).

    ``name`` is also the tag of its operations in the OpenAPI document.
    """
    blp = ApiBlueprint(name, import_name, url_prefix="/api/v1", description=description)
    blp.before_request(authorize)
    return blp


#: What the error responses of the document say beyond the status' phrase.
_ERROR_NOTES = {
    400: "Invalid input: every problem found, field by field",
    401: "No valid API key: send 'Authorization: Bearer KEY'",
    403: "The key's role may not do this (matcher.access.POLICY), or may not change a "
    "volunteer's private fields",
    404: "No such record, plan or file (or the plan is not done)",
    409: "Conflict: the id exists already, or the plan is not done",
    412: "If-Match is not the current strong ETag of the record",
    413: "The body is larger than the service takes (matcher.limits.MAX_BODY_BYTES)",
    415: "Unsupported Content-Type for this body",
    422: "Well formed, but does not fit the stored data",
    428: "Send If-Match with the record's ETag",
    429: "Too many requests with this key, failed authentications from this address, or "
    "plans queued by this role (matcher.access.PLAN_QUEUE_CAP); retry after Retry-After",
    503: "The store is busy; retry",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme: Bearer",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def _error_response(status: http.HTTPStatus) -> dict[str, Any]:
    """Return the OpenAPI response of an error status: RFC 9457 problem+json."""
    content: dict[str, Any] = {PROBLEM: {"schema": ProblemSchema}}
    description = _ERROR_NOTES.get(status, status.phrase)
    if status == 413:
        # `matcher serve` (waitress) refuses a body whose Content-Length is over the bound
        # before the app sees it, as plain text
        content["text/plain"] = {"schema": {"type": "string"}}
        description += "; under `matcher serve` the server's own plain-text answer"
    out: dict[str, Any] = {"description": description, "content": content}
    if status in _ERROR_HEADERS:
        out["headers"] = _ERROR_HEADERS[status]
    return out


def _open_range_attributes(self: Any, field: ma.fields.Field, **_: Any) -> dict[str, Any]:
    """Apispec attribute function: the open ends of ``Range`` validators (OpenAPI 3.0)."""
    out: dict[str, Any] = {}
    for validator in field.validators:
        if isinstance(validator, ma.validate.Range):
            if validator.min is not None and not validator.min_inclusive:
                out["exclusiveMinimum"] = True
            if validator.max is not None and not validator.max_inclusive:
                out["exclusiveMaximum"] = True
    return out


class MatcherApi(Api):
    """flask-smorest's Api, documenting every error as problem+json, per operation."""

    ERROR_SCHEMA = ProblemSchema
    #: No catch-all: each operation lists the statuses it can answer (:func:`_answers`).
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _init_spec(self, **kwargs: Any) -> None:
        super()._init_spec(**kwargs)
        self.ma_plugin.converter.add_attribute_function(_open_range_attributes)

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            if status >= 400:
                self.spec.components.response(status.name, _error_response(status), lazy=True)

    def register_blueprint(self, blp: Blueprint, **options: Any) -> None:
        """Register ``blp``, then add the ``OPENAPI_EXTRA`` keywords of its schemas."""
        super().register_blueprint(blp, **options)
        for key, name in self.ma_plugin.converter.refs.items():
            extra = getattr(key[0], "OPENAPI_EXTRA", None)
            if extra and name in self.spec.components.schemas:
                self.spec.components.schemas[name].update(copy.deepcopy(extra))


#: The errors of every route behind a key: no valid key, rate limits, a busy store.
KEYED = (401, 429, 503)
PUBLIC: dict[str, Any] = {"security": []}
ETAG_HEADER = {
    "ETag": {
        "description": "the record's version as a strong entity tag; send it back in "
        "If-Match to replace or delete the record",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}
LOCATION_HEADER = {
    "Location": {"description": "the new resource", "required": True, "schema": {"type": "string"}}
}
IF_MATCH = {
    "in": "header",
    "name": "If-Match",
    "required": True,
    "description": "the ETag of the record as last read (strong; weak tags, * and lists "
    "never match: 412)",
    "schema": {"type": "string", "pattern": '^"[0-9]{1,18}"$'},
}


IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "a key of the client's choosing (e.g. a UUID) for this report: a retry "
    "with the same key and body answers as the first request did, without a second need "
    "(kept 24 hours); the same key with another body is 422",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


def request_json(schema: type[ma.Schema]) -> dict[str, Any]:
    """Return an OpenAPI request body of ``schema`` as JSON."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def path_id_param(name: str) -> list[dict[str, Any]]:
    """Return the OpenAPI path parameter ``name``: a record id."""
    return [
        {
            "in": "path",
            "name": name,
            "required": True,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.MAX_ID_CHARS,
                "pattern": PATH_ID_PATTERN,
            },
        }
    ]


def plan_id_param() -> list[dict[str, Any]]:
    """Return the OpenAPI path parameter ``plan_id``."""
    return [
        {
            "in": "path",
            "name": "plan_id",
            "required": True,
            "description": "32 hex digits, as POST /plans answers it",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        }
    ]
