"""schemathesis against the API's own /openapi.json over real HTTP: no 500, every answer in its schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.worker.api.conftest import Served

EXAMPLES = 25  # per operation: 23 operations, about 575 generated requests


def test_generated_requests_get_no_500_and_documented_answers(api: Served):
    spec = api.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    schema.config.update(base_url=api.url)
    headers = {"Authorization": f"Bearer {api.token}"}
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance,
                                                            status_code_conformance])

        check()
    assert calls >= 300
