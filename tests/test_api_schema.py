"""Property-based API test: schemathesis generates requests from the app's own OpenAPI (bounded)
and the app answers none of them with a server error or a response that violates the schema."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.conftest import toy_dataset
from tests.test_api import FakeTextEncoder
from tests.test_pipeline import VECTORS


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    toy = toy_dataset()
    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(root / "toy" / "v1")
    service = Service(Settings(state_dir=root / "state", admin_token="t", max_k=50),
                      item_encoder_loader=lambda loaded: FakeTextEncoder())
    app = create_app(bundle, service=service)
    with TestClient(app):
        yield app


def operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_generated_requests_never_break_the_server(app):
    ops = operations(app)
    assert len(ops) >= 10
    labels = [op.label for op in ops]

    @given(data=st.data())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(data):
        op = ops[data.draw(st.sampled_from(range(len(ops))), label="operation")]
        case = data.draw(op.as_strategy(), label=op.label)
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    run()
    assert "POST /v1/sessions/recommendations" in labels
