"""Batch jobs that read a Redis event store (batch-score, refresh-stats --store): a Redis that is unreachable, never
answers or stops answering mid-job ends the job within --redis-timeout-s (RECSYS_REDIS_TIMEOUT_S) in one line, never
a hang (redis-py 5 has no read timeout) or a traceback."""

from __future__ import annotations

import socket
import time

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.hung_redis import HungRedis
from tests.test_pipeline import VECTORS

pytest.importorskip("redis", reason="the Redis event store needs the redis package (the test extra)")


@pytest.fixture()
def bundle(toy, tmp_path):
    return Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")


def batch_score(bundle, tmp_path, url: str, *extra: str, env: dict | None = None):
    """(result, seconds) of `recsys batch-score --store` against the Redis at `url`."""
    started = time.monotonic()
    result = CliRunner().invoke(app, ["batch-score", "--bundle", str(bundle), "--out", str(tmp_path / "out"),
                                      "--store", "--event-store", "redis", "--redis-url", url, *extra], env=env)
    return result, time.monotonic() - started


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return " ".join(lines[0].split())


def test_an_unreachable_redis_ends_a_batch_job_at_once_in_one_line(bundle, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result, seconds = batch_score(bundle, tmp_path, f"redis://user:hunter2@127.0.0.1:{port}/0",
                                  "--redis-timeout-s", "0.5")
    line = one_line_error(result)
    assert line.startswith(f"error: cannot reach Redis at redis://user:***@127.0.0.1:{port}/0")
    assert "hunter2" not in result.output and seconds < 5.0


def test_a_redis_that_never_answers_ends_a_batch_job_within_the_timeout(bundle, tmp_path):
    """It accepts the connection and never answers the first command: the job waited redis-py's read timeout (none
    in redis-py 5: for good)."""
    with HungRedis() as server:
        server.hang()
        result, seconds = batch_score(bundle, tmp_path, server.url, "--redis-timeout-s", "0.3")
    assert one_line_error(result).startswith(f"error: cannot reach Redis at {server.url}: Timeout")
    assert seconds < 5.0


def test_a_redis_that_stops_answering_mid_job_is_one_line_within_the_timeout(bundle, tmp_path):
    """The connection and its ping answered, then the snapshot's first read never did: a traceback of redis'
    TimeoutError (after redis-py's read timeout, if it has one). RECSYS_REDIS_TIMEOUT_S sets the job's timeout as it
    does the API's."""
    with HungRedis(hang_on=b"GET") as server:
        result, seconds = batch_score(bundle, tmp_path, server.url, env={"RECSYS_REDIS_TIMEOUT_S": "0.3"})
    line = one_line_error(result)
    assert line.startswith("error: the Redis event store stopped answering (TimeoutError: Timeout reading from")
    assert line.endswith("--redis-timeout-s (RECSYS_REDIS_TIMEOUT_S) bounds each wait") and seconds < 5.0


def test_a_batch_jobs_store_label_never_holds_the_redis_password():
    """The label goes into the batch manifest (`store.source`) and every message naming the store."""
    from jobs.batch.store import StoreSource

    source = StoreSource(redis_url="redis://reader:s3cret@cache.internal:6380/2")
    assert source.label == "redis://reader:***@cache.internal:6380/2"
    assert StoreSource(redis_url="redis://cache.internal:6380/2").label == "redis://cache.internal:6380/2"
