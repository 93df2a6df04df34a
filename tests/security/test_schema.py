"""schemathesis against the gateway's OpenAPI on a live stack: no 5xx, answers match the schema.

Bounded and deterministic: at most MAX_EXAMPLES generated requests per operation, derandomised,
so that a run in CI is repeatable. Every request carries a real user's bearer token.

Left out: `POST /v1/jobs` (a streamed multipart upload whose bytes must be real media; the upload
tests cover it) and `WS /v1/ws` (not in the OpenAPI document).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.stack import Stack  # noqa: E402

MAX_EXAMPLES = 20


@pytest.fixture(scope="session")
def gateway_schema(stack: Stack) -> object:
    return schemathesis.openapi.from_url(f"{stack.gateway_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("gateway_schema").exclude(method="POST", path="/v1/jobs")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_gateway_api(case: schemathesis.Case, bearer: str) -> None:
    case.call_and_validate(
        headers={"Authorization": bearer},
        timeout=30,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
    )
