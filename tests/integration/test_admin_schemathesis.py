"""schemathesis against /admin/api/openapi.json of a real, seeded gateway: no server error, no
answer that breaks the published schema, for generated valid and invalid requests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from .admin_support import admin_env, auth, seed

#: examples per operation (13 operations; keeps the run well under a minute)
EXAMPLES = 25
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _runner(operation: Any, base_url: str, failures: list[str], calls: list[int]
            ) -> Callable[[], None]:  # fmt: skip
    """A hypothesis test sending ``operation``'s generated cases, collecting failures."""

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: schemathesis.Case) -> None:
        calls.append(1)
        try:
            case.call_and_validate(base_url=base_url, headers=auth("root"), checks=CHECKS)
        except AssertionError as exc:  # schemathesis reports failed checks as AssertionErrors
            failures.append(f"{operation.label}: {str(exc)[:500]}")
            raise

    return run  # type: ignore[no-any-return]


def test_admin_api_conforms_to_its_openapi_schema(tmp_path: Path) -> None:
    """Every operation, fed generated requests with a full-scope token, never answers 5xx and
    always answers with a documented status and a body matching its schema."""
    with admin_env(tmp_path, None) as env:
        seed(env)
        schema = schemathesis.openapi.from_url(f"{env.api}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 13
        failures: list[str] = []
        calls: list[int] = []
        for operation in operations:
            with contextlib.suppress(AssertionError):  # collected in failures, reported below
                _runner(operation, env.api, failures, calls)()
        assert failures == []
        assert len(calls) >= 5 * len(operations)  # it really generated and sent requests
