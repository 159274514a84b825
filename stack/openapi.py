"""The OpenAPI 3 document of the public REST API, generated from the protos at build time.

``make protos`` runs protoc-gen-swagger (Debian's golang-grpc-gateway, a maintained generator:
paths, parameters and schemas straight from the ``google.api.http`` rules and the messages,
proto field names, int64 as strings, enums as names, timestamps as date-time) and
swagger2openapi (npm, pinned) to turn its Swagger 2.0 into OpenAPI 3. This module then adds what
those cannot know, from the same contract the edge is configured from
(``stack.envoy_config.contract_routes``): which operations need the bearer token and which are
anonymous, the JSON error body, and the statuses every operation can answer.

    python -m stack.openapi gen/openapi.v3.json gen/openapi.json
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

from mesh import validation
from stack.envoy_config import contract_routes

TITLE = "tiktok-mesh REST API"
VERSION = "v1"

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error: the gRPC status code and a short message a developer can act on.",
    "properties": {
        "code": {"type": "integer", "description": "The gRPC status code (3: INVALID_ARGUMENT)."},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message"],
}

# what every operation may answer besides its success, and when
COMMON_ERRORS = {
    "400": "A field breaks its limits, is not valid UTF-8, or a token or cursor was edited.",
    "401": "The access token is missing (where one is needed), invalid or expired.",
    "429": "A rate limit: retry after the seconds in the Retry-After header.",
    "503": "A backing service is unavailable: retry in a moment.",
}
PATH_ERRORS = {"404": "The resource named in the path does not exist."}
SIGNED_IN_ERRORS = {"403": "The caller may not do this to that resource."}


# what an operation answers beyond the common errors, and when (the servicers' own raises)
OPERATION_ERRORS = {
    "CreateUser": {"409": "The handle is taken."},
    "CreateFollow": {"404": "No such user to follow."},
    "CreateLike": {"404": "No such video."},
    "CreateFavorite": {"404": "No such video."},
    "CreateVideo": {"404": "No such upload ticket of the caller's, or it expired."},
    "GetFeed": {"403": "`user_id` is not the signed-in user: feeds are personal."},
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _excluding(categories: set[str], allowed: str = "", also: str = "") -> str:
    """A pattern for text without any character of these Unicode categories (but ``allowed``)
    nor of ``also``, from this Python's Unicode tables, the ones the services check with. The
    characters stand in the class as themselves (JSON escapes them), so the pattern reads the
    same in Python and in ECMA-262 with the `u` flag, astral characters included."""
    codes = sorted(
        {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in categories}
        - {ord(c) for c in allowed}
        | {ord(c) for c in also}
    )
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges)
    return f"^[^{body}]*$"


def request_rules() -> dict[str, dict[str, dict[str, Any]]]:
    """The field rules the services enforce, per request schema, from the services' own
    constants (DESIGN.md's limits): what a generated client, a form or a fuzzer may send."""
    from activity_svc import rules as accounts
    from activity_svc.views import MAX_VIEWS
    from readmodels.objects import MAX_UPLOAD_BYTES
    from upload_svc import rules as uploads

    free_text = {"pattern": FREE_TEXT}
    return {
        "v1CreateUserRequest": {
            "handle": {"pattern": f"^{accounts.HANDLE.pattern}$"},
            "password": {"minLength": accounts.PASSWORD_MIN, "maxLength": accounts.PASSWORD_MAX},
            "display_name": {"maxLength": accounts.DISPLAY_NAME_MAX, "pattern": NO_CONTROLS},
        },
        "v1CreateSessionRequest": {
            "handle": {"pattern": f"^{accounts.HANDLE.pattern}$"},
            "password": {"minLength": 1},
        },
        "v1RefreshSessionRequest": {"refresh_token": {"minLength": 1}},
        "v1CreateCommentRequest": {
            "text": {"minLength": 1, "maxLength": accounts.COMMENT_MAX, **free_text}
        },
        "v1CreateUploadRequest": {
            "content_type": {"enum": list(uploads.CONTENT_TYPES)},
            "size_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_UPLOAD_BYTES},
        },
        "v1CreateVideoRequest": {"caption": {"maxLength": uploads.MAX_CAPTION_CHARS, **free_text}},
        "v1RecordViewsRequest": {"views": {"minItems": 1, "maxItems": MAX_VIEWS}},
        "v1View": {"watched_ms": {"type": "integer", "minimum": 0}},
        "page_size": {"page_size": {"minimum": 0, "maximum": validation.MAX_PAGE_SIZE}},
    }


# free text (captions, comments): no control characters but line breaks and tabs, no bidi controls
FREE_TEXT = _excluding({"Cc"}, allowed="\n\r\t", also="".join(sorted(validation.BIDI_CONTROLS)))
# names: no control characters at all, no bidi controls, no invisible characters
NO_CONTROLS = _excluding(
    {"Cc"}, also="".join(sorted(validation.BIDI_CONTROLS | validation.INVISIBLE))
)
IDS = re.compile(r"(^|_)id$")


def _constrain(document: dict[str, Any]) -> None:
    """Request fields get the services' rules; ids are UUIDs; page sizes their bounds."""
    schemas = document["components"]["schemas"]
    rules = request_rules()
    for name, fields in rules.items():
        for field, rule in fields.items():
            if name in schemas:
                schemas[name]["properties"][field].update(rule)
    for name, schema in schemas.items():
        if name.endswith("Request") or name == "v1View":
            _constrain_request(schema)
    for operations in document["paths"].values():
        for operation in operations.values():
            in_path = set()
            for parameter in operation.get("parameters", []):
                _constrain_parameter(parameter, operation["operationId"], rules["page_size"])
                if parameter["in"] == "path":
                    in_path.add(parameter["name"])
            _drop_path_fields(document, operation, in_path)


def _constrain_request(schema: dict[str, Any]) -> None:
    properties = schema.get("properties", {})
    required = [f for f, p in properties.items() if _required(p)]
    if required:
        schema["required"] = required
    # the transcoder ignores unknown fields, but not one without a name
    schema["propertyNames"] = {"minLength": 1}
    for field, prop in properties.items():
        if IDS.search(field) and prop.get("type") == "string":
            prop["format"] = "uuid"
        if field not in required and prop.get("type") in ("string", "integer", "boolean"):
            # proto3 JSON: null is the field's default, as if it were left out
            prop["type"] = [prop["type"], "null"]


def _constrain_parameter(
    parameter: dict[str, Any], operation_id: str, page_rules: dict[str, dict[str, Any]]
) -> None:
    name, schema = parameter["name"], parameter["schema"]
    if IDS.search(name):
        if parameter.get("required"):
            schema["format"] = "uuid"
        else:
            # an optional id in the query may be left empty, as if not sent
            schema["anyOf"] = [{"format": "uuid"}, {"maxLength": 0}]
    if name == "page_size":
        schema.update(page_rules["page_size"])
        if operation_id == "GetFeed":
            from feed_svc.service import MAX_PAGE

            schema["maximum"] = MAX_PAGE
    if name == "kind":
        schema["enum"] = ["", "following", "for_you"]


def _required(prop: dict[str, Any]) -> bool:
    """The protos' comments say "Required." first (AIP-203) for fields a call needs; a number
    whose zero is allowed cannot be told from a missing one, so it is not required."""
    if not str(prop.get("description", "")).startswith("Required."):
        return False
    return prop.get("type") != "integer" or prop.get("minimum", 0) > 0


def _drop_path_fields(document: dict[str, Any], operation: dict[str, Any], in_path: set) -> None:
    """A field bound to the path (``/v1/videos/{video_id}/comments``) is not sent in the body."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = body.get("schema", {}).get("$ref", "")
    if not ref or not in_path:
        return
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    for name in in_path:
        schema.get("properties", {}).pop(name, None)
        if name in schema.get("required", []):
            schema["required"].remove(name)


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Adds security, errors, the request rules and the document's own name to the converted
    document."""
    _constrain(document)
    # 3.1: JSON Schema itself (type lists for null, propertyNames); nothing else changes
    document["openapi"] = "3.1.0"
    routes = {r.path.rsplit("/", 1)[1]: r for r in contract_routes() if r.public}
    document["info"] = {
        "title": TITLE,
        "version": VERSION,
        "description": "REST+JSON through the edge (Envoy's gRPC-JSON transcoder); the same "
        "methods answer gRPC on the same port. Generated from the protos.",
    }
    document["servers"] = [{"url": "/"}]
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            route = routes[operation["operationId"]]
            operation["security"] = [] if route.anonymous else [{"bearer": []}]
            errors = dict(COMMON_ERRORS)
            if "{" in path:
                errors |= PATH_ERRORS
            if not route.anonymous:
                errors |= SIGNED_IN_ERRORS
            errors |= OPERATION_ERRORS.get(operation["operationId"], {})
            responses = operation.setdefault("responses", {})
            responses.pop("default", None)
            for status, description in errors.items():
                responses.setdefault(status, _error(description))
    return document


def main(argv: list[str]) -> int:
    source, target = Path(argv[1]), Path(argv[2])
    document = complete(json.loads(source.read_text()))
    target.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
