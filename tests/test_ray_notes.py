"""Ray's notes on runs that go well stay out of the terminal; its errors and other warnings are shown."""

from __future__ import annotations

import logging

from jobs.batch import ray_engine


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, "x.py", 1, message, None, None)


def test_ray_data_info_its_progress_bar_note_and_a_local_rays_token_notice_are_dropped_errors_are_not():
    """As `recsys batch-score --engine ray` printed them with ray 2.60 (each line was on the terminal)."""
    local, joined = ray_engine.RayNotes(local=True), ray_engine.RayNotes(local=False)
    token = ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out. For more "
             "information, see https://docs.ray.io/en/latest/ray-security/token-auth.html")
    dropped = [
        record("ray.data._internal.execution.streaming_executor", logging.INFO,
               "Starting execution of Dataset dataset_035Al_0. Full logs are in /tmp/ray/session_x/logs/ray-data"),
        record("ray.data._internal.execution.streaming_executor", logging.INFO,
               "Execution plan of Dataset dataset_035Al_0: InputDataBuffer[Input] -> ActorPoolMapOperator[…]"),
        record("ray.data._internal.progress", logging.WARNING, "Progress bars disabled. To enable, set "
               "`ray.data.DataContext.get_current().enable_progress_bars = True`."),
        record("ray._private.authentication.authentication_token_setup", logging.WARNING, token),
    ]
    assert [local.filter(r) for r in dropped] == [False] * 4
    assert joined.filter(dropped[3])  # a cluster the command joins: its notice is the cluster owner's to read
    kept = [record("ray.data._internal.execution.operators", logging.ERROR, "MapBatches(ScoreChunks): actors died"),
            record("ray.data.context", logging.WARNING, "the object store is nearly full"),
            record("ray.train", logging.WARNING, "Training has not started in the last 60 seconds")]
    assert [local.filter(r) for r in kept] == [True] * 3


def test_the_notes_filter_sits_on_rays_console_handlers_for_the_session_only_not_on_its_log_files(tmp_path):
    logger = logging.getLogger("ray.data")
    console, log_file = logging.StreamHandler(), logging.FileHandler(tmp_path / "ray-data.log")
    logger.addHandler(console)
    logger.addHandler(log_file)
    try:
        with ray_engine.quiet_ray_notes(local=True):
            assert [type(f) for f in console.filters] == [ray_engine.RayNotes] and log_file.filters == []
        assert console.filters == []
    finally:
        logger.removeHandler(console)
        logger.removeHandler(log_file)
        log_file.close()
