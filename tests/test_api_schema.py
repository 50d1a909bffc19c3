"""Schemathesis against the app in-process, as its CLI runs it (every phase: examples, coverage, fuzzing,
stateful; every default check: server errors, status codes, content types, response schemas and headers,
positive data accepted, negative data rejected, authentication, unsupported methods, …): the OpenAPI document
is the contract, and the app keeps it. Bounded (a fixed number of examples per operation, deterministic): 15 in
the default run, schemathesis's default 100 with `-m slow`."""

import time
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from api.app import create_app
from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.conftest import toy_dataset
from tests.test_api import FakeTextEncoder
from tests.test_api_ranker import FixedTextEncoder
from tests.test_batch import ranked_bundle  # noqa: F401  (module fixture: the planted bundle with a ranker)
from tests.test_pipeline import VECTORS

TOKEN = "t"
EXAMPLES = 15  # per operation and phase, for each of the two bundles: the default run (under a minute in all)
FULL_EXAMPLES = 100  # schemathesis's default: `python -m pytest -m slow tests/test_api_schema.py` (a few minutes)


@pytest.fixture(scope="module", params=["toy", "ranked"])
def app(request, tmp_path_factory):
    """The toy catalogue (filterable attributes, no re-ranker) and the planted one with a LightGBM re-ranker."""
    root = tmp_path_factory.mktemp("schema")
    if request.param == "toy":
        toy = toy_dataset()
        bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(root / "toy" / "v1")
        encoder = FakeTextEncoder()
    else:
        bundle, recommender = request.getfixturevalue("ranked_bundle")
        encoder = FixedTextEncoder(recommender.index.dim)
    service = Service(Settings(state_dir=root / "state", admin_token=TOKEN, max_k=50),
                      item_encoder_loader=lambda loaded: encoder)
    app = create_app(bundle, service=service)
    with TestClient(app):
        yield app


def run_schemathesis(app, examples: int, seed: int = 1) -> tuple[str, dict]:
    """One run of every phase with every default check; (summary line, failures by (operation, check, title))."""
    config = SchemathesisConfig.from_dict({
        "seed": seed, "workers": 1, "generation": {"max-examples": examples, "deterministic": True},
        "auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}})  # the admin routes get past the token too
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    started, cases, operations, checks = time.perf_counter(), 0, set(), Counter()
    failures: dict[tuple, str] = {}
    phases, errors = [], []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            cases += len(recorder.cases)
            if " /" in recorder.label:  # "POST /v1/events", not "Stateful tests"
                operations.add(recorder.label)
            for case_id, nodes in recorder.checks.items():
                for node in nodes:
                    checks[node.name] += 1
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        failure = node.failure_info.failure
                        key = (recorder.label, node.name, failure.title)
                        failures.setdefault(key, f"{failure.message}\n{node.failure_info.code_sample}")
        elif isinstance(event, events.PhaseFinished) and event.phase.is_enabled:
            phases.append(event.phase.name.value)
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "value", None) or getattr(event, "exception", None)))
    assert not errors, errors
    summary = (f"schemathesis {schemathesis.__version__}: {cases} test cases on {len(operations)} operations, "
               f"phases {', '.join(dict.fromkeys(phases))}; {sum(checks.values())} checks of {len(checks)} kinds "
               f"({', '.join(sorted(checks))}); {len(failures)} failures in {time.perf_counter() - started:.0f} s")
    return summary, failures


@pytest.mark.parametrize("examples", [EXAMPLES, pytest.param(FULL_EXAMPLES, marks=pytest.mark.slow)])
def test_schemathesis_finds_no_failure_with_all_default_checks(app, request, examples):
    summary, failures = run_schemathesis(app, examples)
    print(f"\n[{request.node.callspec.params['app']} bundle, {examples} examples] {summary}")
    assert not failures, summary + "\n\n" + "\n\n".join(f"{key}: {text}" for key, text in failures.items())
    assert {"not_a_server_error", "status_code_conformance", "content_type_conformance",
            "response_schema_conformance", "positive_data_acceptance", "negative_data_rejection"} <= set(
        summary.split("(")[1].split(")")[0].split(", "))
    assert " phases probing, schema_analysis, auth_bootstrap, examples, coverage, fuzzing, stateful;" in summary


def test_the_schemas_import_without_a_warning_where_pydantic_protects_its_model_namespace():
    """At the declared pydantic floor (2.7) the `model_` namespace is protected, and `model_version` /
    `model_name` warned on every start ("Field … has conflict with protected namespace 'model_'"). Here that default
    is put back before the import, which must stay silent under -W error."""
    import subprocess
    import sys

    code = ("import pydantic\n"
            "pydantic.BaseModel.model_config['protected_namespaces'] = ('model_',)\n"
            "import api.schemas\n")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-600:]
