"""`api.service.imported`: a reload sets torch's threads while a request's upsert may still be importing torch.
`sys.modules` then holds the half-initialised module, which had no `set_num_threads` yet: the reload (or the
worker's thread following another's reload) ended in an AttributeError, a 500."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from api.service import imported


def test_a_module_another_thread_is_importing_is_given_once_its_import_is_done(tmp_path, monkeypatch):
    name = "slow_to_import_for_recsys_test"
    (tmp_path / f"{name}.py").write_text(
        "import time\ntime.sleep(0.5)\n\ndef set_num_threads(n):\n    return n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    importing = threading.Thread(target=__import__, args=(name,))
    importing.start()
    deadline = time.monotonic() + 5
    while name not in sys.modules and time.monotonic() < deadline:
        time.sleep(0.005)
    half = sys.modules[name]
    assert not hasattr(half, "set_num_threads")  # what the reload read before
    module = imported(name)
    assert module is half and module.set_num_threads(3) == 3
    importing.join()
    monkeypatch.delitem(sys.modules, name)


def test_a_module_never_imported_is_none():
    assert imported("a_module_nobody_imports_for_recsys_test") is None


# A request's thread that loads the item tower (a free-text query, an upsert) while another thread is importing
# transformers: the package replaces itself in `sys.modules` with a lazy module at the end of its import, and
# CPython's `from transformers import AutoModel` keeps the module object it found before it waited for that import,
# the replaced one, which has none of the lazy names: ImportError "cannot import name 'AutoModel'", a 500 (the soak of
# two workers with a trained bundle: a session's text beside the first upsert after a reload). Run in a fresh
# interpreter, where transformers is not imported yet; the first thread's import is held halfway (the package in
# `sys.modules`, still initialising) until the request's thread waits for it.
RACE = """
import importlib, importlib.abc, importlib.machinery, sys, threading, time
from encoders.loading import load_recommender

recommender = load_recommender(sys.argv[1])
assert "transformers" not in sys.modules
halfway, go_on = threading.Event(), threading.Event()


class Hold(importlib.abc.MetaPathFinder):  # the first submodule that "first" imports for transformers: run on go_on

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("transformers.") or threading.current_thread().name != "first" or halfway.is_set():
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):  # (outside the global import lock, which find_spec holds)
            halfway.set()
            go_on.wait(60)
            run(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, Hold())
first = threading.Thread(target=importlib.import_module, args=("transformers",), name="first")
first.start()
assert halfway.wait(60)
failed = []


def request():
    try:
        recommender.item_tower().encode_texts(["a black camera"])
    except Exception as exc:
        failed.append(f"{type(exc).__name__}: {exc}")


second = threading.Thread(target=request)
second.start()
waiting, deadline = False, time.monotonic() + 60
while not waiting and second.is_alive() and time.monotonic() < deadline:  # until the request's thread waits on
    time.sleep(0.001)                                                    # transformers' import lock
    frame = sys._current_frames().get(second.ident)
    while frame is not None and not waiting:
        lock = frame.f_locals.get("self") if frame.f_code.co_name == "acquire" else None
        waiting = str(getattr(lock, "name", "")).startswith("transformers")
        frame = frame.f_back
go_on.set()
first.join()
second.join()
print(failed[0] if failed else "encoded" if waiting else "never waited")
"""


@pytest.mark.parametrize("bundle", ["frozen_bundle", "trained_bundle"])
def test_an_item_tower_loaded_while_another_thread_imports_transformers_loads(bundle, request):
    path = request.getfixturevalue(bundle)
    done = subprocess.run([sys.executable, "-c", RACE, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "encoded", done.stdout[-2000:]
