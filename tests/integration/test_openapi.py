"""The API document the edge serves: generated from the protos, it names every public route
of the contract with its method, and says which need the bearer token."""

from __future__ import annotations

from stack.envoy_config import contract_routes
from stack.launcher import Stack
from tests.browser import DESKTOP, NewPage
from tests.helpers import Http


def _http_rules() -> dict[str, tuple[str, str]]:
    """Each public method's (HTTP method, path template), from the protos' http rules."""
    return {
        r.path.rsplit("/", 1)[1]: (r.rest[0].lower(), r.rest[1])
        for r in contract_routes()
        if r.rest
    }


def test_the_edge_serves_an_openapi_3_document_of_every_public_route(edge: Http) -> None:
    r = edge.get("/openapi.json")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    document = r.json()
    assert document["openapi"].startswith("3.")
    anonymous = {p.path.rsplit("/", 1)[1]: p.anonymous for p in contract_routes() if p.public}
    rules = _http_rules()
    assert set(rules) == set(anonymous)
    for name, (verb, path) in rules.items():
        operation = document["paths"][path][verb]
        assert operation["operationId"] == name
        assert operation["security"] == ([] if anonymous[name] else [{"bearer": []}]), name
        assert {"400", "401", "429"} <= set(operation["responses"]), name
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    video = document["components"]["schemas"]["v1Video"]["properties"]
    # proto field names; int64 as strings, as the transcoder prints them
    assert video["view_count"] == {**video["view_count"], "type": "string", "format": "int64"}
    assert video["created_at"]["format"] == "date-time"


def test_the_document_is_not_writable(edge: Http) -> None:
    assert edge.post("/openapi.json", {}).status == 404


def test_docs_render_every_operation_in_a_real_browser(
    edge: Http, stack: Stack, new_page: NewPage
) -> None:
    assert edge.get("/docs/assets/swagger-ui-bundle.js").status == 200
    moved = edge.get("/docs")
    assert (moved.status, moved.headers["location"]) == (301, "/docs/")  # same origin
    operations = sum(len(ops) for ops in edge.get("/openapi.json").json()["paths"].values())
    page = new_page(DESKTOP)
    page.goto(f"http://127.0.0.1:{stack.topo.edge_port}/docs/")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length === {operations}")
    assert "tiktok-mesh REST API" in page.inner_text(".info")


def test_the_document_is_valid_openapi_3_1_with_the_services_rules(edge: Http) -> None:
    from openapi_spec_validator import validate

    document = edge.get("/openapi.json").json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    user = schemas["v1CreateUserRequest"]
    assert user["required"] == ["handle", "password"]
    assert user["properties"]["handle"]["pattern"] == "^[a-z0-9_.]{3,30}$"
    assert user["properties"]["password"]["minLength"] == 8
    assert schemas["v1CreateUploadRequest"]["properties"]["size_bytes"]["maximum"] == 64 * 2**20
    comments = document["paths"]["/v1/videos/{video_id}/comments"]
    assert comments["post"]["parameters"][0]["schema"]["format"] == "uuid"
    assert "video_id" not in schemas["v1CreateCommentRequest"]["properties"]  # from the path


def test_a_path_with_a_method_it_does_not_answer_is_405_naming_the_ones_it_does(
    edge: Http,
) -> None:
    r = edge.request("PATCH", "/v1/users/01a23c1e-4141-75b6-b8ba-80dc4f0c4d8b", {})
    assert (r.status, r.headers["allow"], r.json()["code"]) == (405, "GET", 12)
    assert edge.get("/v1/follows").headers["allow"] == "POST"
    assert edge.request("PUT", "/v1/sessions:refresh", {}).status == 405
    assert edge.get("/v1/no-such-thing").status == 404
