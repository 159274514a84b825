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
import sys
from pathlib import Path
from typing import Any

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


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Adds security, errors and the document's own name to the converted document."""
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
