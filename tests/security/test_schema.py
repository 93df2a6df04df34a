"""schemathesis against the gateway's OpenAPI on a live stack: no 5xx, answers match the schema.

Bounded and deterministic: at most MAX_EXAMPLES generated requests per operation and generation
mode (valid data, and data the schema forbids), derandomised so that a CI run is repeatable.
Every request carries a real user's bearer token.

Left out: `POST /v1/jobs` (a streamed multipart upload whose bytes must be real media; the upload
tests cover it), `POST /v1/webhooks` (see EXCLUDED) and `WS /v1/ws` (not an OpenAPI operation).

The operations are listed from the gateway app in-process, so that a new route is fuzzed without
anyone editing this file; the requests go to the live stack. (schemathesis's own pytest loader,
`from_fixture`, fails on pytest 9, hence `as_strategy` under our own `@given`.)
"""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.app import create_app  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

MAX_EXAMPLES = 20
# POST /v1/webhooks resolves the URL it is given: generated host names would send DNS queries off
# this machine (tests/e2e/test_webhooks.py covers its refusals).
EXCLUDED = {("POST", "/v1/jobs"), ("POST", "/v1/webhooks")}
NO_SERVER_ERRORS = [not_a_server_error]
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def gateway_operations() -> list[tuple[str, str]]:
    document: dict[str, Any] = create_app(Settings()).openapi()
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if (method.upper(), path) not in EXCLUDED
    ]


@pytest.fixture(scope="session")
def gateway_schema(stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{stack.gateway_url}/openapi.json")


MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


def fuzz(operation: Any, mode: Any, bearer: str, checks: list[Any]) -> None:
    @given(data=st.data())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        case.call_and_validate(headers={"Authorization": bearer}, checks=checks, timeout=30)

    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"the schema leaves nothing to generate in {mode.value} mode")


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), gateway_operations())
def test_no_server_errors(
    gateway_schema: Any, bearer: str, method: str, path: str, mode: Any
) -> None:
    fuzz(gateway_schema[path][method], mode, bearer, NO_SERVER_ERRORS)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), gateway_operations())
def test_answers_match_the_schema(
    gateway_schema: Any, bearer: str, method: str, path: str, mode: Any
) -> None:
    fuzz(gateway_schema[path][method], mode, bearer, CONFORMANCE)
