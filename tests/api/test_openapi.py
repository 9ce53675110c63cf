"""/openapi.json describes what the server sends: every error status a route can answer is documented
with the one error model, FastAPI's own 422 shape (`detail`) appears nowhere, a 405 names the allowed
methods, and a real 422 body validates against the documented schema."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.api.test_bad_input import ROWS
from tests.api.test_schema_fuzz import OPENAPI

ERROR_REF = "#/components/schemas/ErrorResponse"


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def _validator(schema: dict[str, Any], ref: str) -> Any:
    return jsonschema_rs.Draft202012Validator({"$ref": ref, "components": schema["components"]})


def test_openapi_served_is_the_document_the_fuzz_test_reads(client: httpx.Client) -> None:
    assert client.get("/openapi.json").json() == OPENAPI


def test_openapi_every_error_response_is_the_error_model() -> None:
    errors = 0
    for method, path, op in _operations(OPENAPI):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/readyz":  # the probe answers 503 in its own shape
                continue
            assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (method, path)
            errors += 1
    assert errors > 20
    assert not {"HTTPValidationError", "ValidationError"} & set(OPENAPI["components"]["schemas"])


@pytest.mark.parametrize("row", [r for r in ROWS if r.server != "loading"], ids=lambda r: r.kind)
def test_openapi_documents_each_status_the_bad_input_table_gets(row: Any) -> None:
    """Every (route, status) in the README's table of bad input is documented for that route."""
    operation = OPENAPI["paths"].get(row.path, {}).get(row.method.lower())
    if operation is None:  # an unknown endpoint or a wrong method: there is no operation to document it on
        assert row.status in (404, 405)
        return
    assert str(row.status) in operation["responses"], (row.method, row.path, row.status)


def test_a_405_names_the_allowed_methods(client: httpx.Client) -> None:
    for method, path, allowed in [
        ("DELETE", "/v1/search", "POST"),
        ("PUT", "/v1/ask", "POST"),
        ("POST", "/v1/documents", "GET"),
        ("POST", "/healthz", "GET, HEAD"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 405, (method, path)
        assert sorted(r.headers["allow"].split(", ")) == sorted(allowed.split(", ")), (method, path)
        assert r.json()["error"]["code"] == "method_not_allowed"


def test_a_422_body_validates_against_the_documented_schema(client: httpx.Client) -> None:
    documented = OPENAPI["paths"]["/v1/search"]["post"]["responses"]["422"]["content"]["application/json"]
    validator = _validator(OPENAPI, documented["schema"]["$ref"])
    for body in ({"query": ""}, {"query": "pay", "k": "5"}, {"nope": 1}):
        r = client.post("/v1/search", json=body)
        assert r.status_code == 422
        validator.validate(r.json())
    assert not validator.is_valid({"detail": [{"loc": ["body"], "msg": "x", "type": "y"}]})


def test_a_404_and_readyz_validate_against_their_documented_schemas(client: httpx.Client) -> None:
    for path, documented, status in [
        ("/v1/passages/nope", "/v1/passages/{passage_id}", "404"),
        ("/readyz", "/readyz", "200"),
    ]:
        r = client.get(path)
        assert r.status_code == int(status)
        schema = OPENAPI["paths"][documented]["get"]["responses"][status]["content"]["application/json"]
        _validator(OPENAPI, schema["schema"]["$ref"]).validate(r.json())
