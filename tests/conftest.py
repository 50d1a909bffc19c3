"""Shared fixtures: a tiny BERT, a small hand-made dataset, and a bundle built once per session."""

from __future__ import annotations

import atexit
import faulthandler
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from recsys.data.dataset import Dataset
from tests.tiny_bert import build_tiny_bert

# ONNX graphs exported by the tests (tiny random BERTs) go to a temporary cache, not the user's ~/.cache
os.environ["RECSYS_ONNX_CACHE"] = tempfile.mkdtemp(prefix="recsys-onnx-tests-")
atexit.register(shutil.rmtree, os.environ["RECSYS_ONNX_CACHE"], ignore_errors=True)
# so do the re-rankers they compile (recsys.compiled_trees)
os.environ["RECSYS_RANKER_CACHE"] = tempfile.mkdtemp(prefix="recsys-ranker-tests-")
atexit.register(shutil.rmtree, os.environ["RECSYS_RANKER_CACHE"], ignore_errors=True)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def toy_dataset() -> Dataset:
    """6 items in two families; 4 users with known sequences (timestamps increasing)."""
    items = pl.DataFrame({
        "item_id": ["cam1", "cam2", "bag1", "bag2", "shoe1", "sock1"],
        "text": ["black mirrorless camera", "silver compact camera", "camera bag black", "camera bag brown",
                 "running shoe blue", "running socks blue"],
        "title": ["Camera One", "Camera Two", "Bag One", "Bag Two", "Shoe One", "Sock One"],
        "category": ["cameras", "cameras", "bags", "bags", "running", "running"],
    })
    sequences = {"u1": ["cam1", "bag1", "cam2", "bag2"], "u2": ["shoe1", "sock1", "cam1", "bag1"],
                 "u3": ["cam2", "bag2", "shoe1", "sock1"], "u4": ["cam1", "cam2"]}
    rows = [(u, i, t) for u, seq in sequences.items() for t, i in enumerate(seq)]
    interactions = pl.DataFrame(rows, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64},
                                orient="row")
    return Dataset("toy", items, interactions)


_full_pass = {"objects": 0, "rss": 0}  # the session heap after the last full collection pass: tracked objects, bytes


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before a test's fixtures are set up, what the session holds (torch, transformers, … ~0.6M tracked objects,
    the higher-scoped fixtures, the earlier tests' leftovers) is frozen out of the garbage collector. The app's
    lifespan runs a full collection pass each time a test starts one (api.app: gc.collect before its gc.freeze; its
    shutdown unfreezes), and in this process every pass walked the whole session heap, 0.4-0.9 s: ~270 passes, a
    quarter of the default run's CPU. Frozen, a pass walks what the test made. Cycles that became garbage in earlier
    tests are freed by a real full pass once the heap has grown by 300k objects or 500 MB since the last one (bounded
    memory, a few passes a run)."""
    gc.freeze()
    if gc.get_freeze_count() > _full_pass["objects"] + 300_000 or _rss_bytes() > _full_pass["rss"] + 500 * 2**20:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _full_pass.update(objects=gc.get_freeze_count(), rss=_rss_bytes())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Frozen again after a test's teardown (an app's shutdown unfreezes the heap), so that the collections while
    the next module's fixtures are built walk only what they make."""
    yield
    gc.freeze()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    corpus = list(toy_dataset().items["text"])
    try:
        from recsys.data.synthetic import generate_shop
        corpus += generate_shop(n_users=50, n_items=120, seed=0).items["text"].to_list()
    except ImportError:
        pass
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), corpus)


@pytest.fixture(scope="session")
def shop():
    """A small generated shop and its split (training tests)."""
    from recsys.data.synthetic import generate_shop
    from recsys.splits import split_dataset

    dataset = generate_shop(n_users=150, n_items=120, seed=0)
    return dataset, split_dataset(dataset)


@pytest.fixture()
def toy() -> Dataset:
    return toy_dataset()


@pytest.fixture()
def redis_url(tmp_path):
    """A Redis server of the test's own, on a free port (skipped where redis-server is not installed)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture()
def one_faiss_thread():
    """Shared 2-core machine: OpenMP spinning under contention makes multi-threaded faiss erratic."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


RAY_TEST_SECONDS = float(os.environ.get("RECSYS_RAY_TEST_SECONDS", 900))


@pytest.fixture(autouse=True)
def ray_test_deadline(request):
    """Every test that uses the local Ray is stopped after RAY_TEST_SECONDS (env RECSYS_RAY_TEST_SECONDS) instead of
    hanging the suite: a Ray Train run whose workers the cluster cannot place waits for them forever (ray 2.10-2.50
    gave the coordinator a CPU of its own). The driver then sits in Ray's C++ `ray.wait`, where Python's SIGALRM and
    SIGINT handlers do not run (measured at ray 2.10), so a watchdog thread says why, dumps every thread's stack and
    sends SIGTERM: Ray's driver turns it into SystemExit, which fails this test, and the suite goes on."""
    if "local_ray" not in request.fixturenames:
        yield
        return

    def expire():
        sys.stderr.write(f"\n{request.node.name} ran past {RAY_TEST_SECONDS:.0f} s (RECSYS_RAY_TEST_SECONDS): "
                         "stopped so that the suite does not hang; Ray's output above says what it waited for, the "
                         "threads' stacks follow\n")
        try:
            faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    watchdog = threading.Timer(RAY_TEST_SECONDS, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance (2 CPUs) for every Ray test of the session: starting one costs 10-20 s."""
    ray = pytest.importorskip("ray", reason="the Ray engines need the distributed extra: pip install '.[distributed]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning",  # not a `ray start`'s
             object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def frozen_bundle(tmp_path_factory, tiny_bert_dir) -> Path:
    """A zero-shot bundle of a small synthetic shop whose item tower is the tiny BERT (so upserts and text queries
    encode fast): artifacts/shop/v1."""
    from jobs.workflows import build_bundle
    from recsys.config import BuildConfig, EncoderConfig
    from recsys.data.synthetic import generate_shop

    root = tmp_path_factory.mktemp("frozen")
    config = BuildConfig(encoder=EncoderConfig(model=str(tiny_bert_dir), max_length=32))
    path, _, _ = build_bundle(generate_shop(n_users=60, n_items=90, seed=2), config, root / "artifacts", "shop",
                           progress=False)
    return path.rename(path.parent / "v1")


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, tiny_bert_dir) -> Path:
    """A bundle with trained (one epoch, tiny BERT) towers: its user tower runs torch on request."""
    from encoders.experiment import train_and_evaluate
    from recsys.data.synthetic import generate_shop
    from recsys.splits import split_dataset
    from tests.test_lora import small_config

    dataset = generate_shop(n_users=60, n_items=90, seed=2)
    trained = train_and_evaluate(dataset, split_dataset(dataset), small_config(tiny_bert_dir), name="tiny",
                                 out_root=tmp_path_factory.mktemp("trained"), progress=False)
    return trained.path
