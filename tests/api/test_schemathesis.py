"""Property-based contract test: Schemathesis generates requests from the live schema
(`/api/schema/`) for every publisher API operation and checks each answer: no 5xx, status
codes, content types, headers and bodies as documented. Bounded: a fixed number of examples
per operation, no deadline (the machine is shared)."""

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from config.wsgi import application

pytestmark = pytest.mark.django_db

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(autouse=True)
def wsgi_in_test_transaction():
    """Calls into the WSGI application share the test's database transaction: the handler
    would otherwise close the connection after each request (as Django's test client also
    prevents), ending the transaction the test's data lives in."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


# Loaded from the running application, not from the committed file. (Not through
# `schemathesis.pytest.from_fixture`: its lazy loader does not run on pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@(
    schema.include(path_regex=r"^/api/v1/")
    .exclude(method="POST", path="/api/v1/conversions")
    .parametrize()
)
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_it_keeps_the_contract(case, world, publisher_key):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {publisher_key}"},
        # What the contract promises. Not "every schema-valid request is accepted" (some
        # rules are beyond JSON Schema: a cursor must be one we issued, `to` not before
        # `from`, no NUL characters; those get a documented 400), nor "every invalid one is
        # refused" (empty and unknown query parameters are ignored, as DRF does).
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            ignored_auth,
            unsupported_method,
        ],
    )
