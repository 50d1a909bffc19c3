"""`api.service.imported`: a reload sets torch's threads while a request's upsert may still be importing torch.
`sys.modules` then holds the half-initialised module, which had no `set_num_threads` yet: the reload (or the
worker's thread following another's reload) ended in an AttributeError, a 500."""

from __future__ import annotations

import sys
import threading
import time

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
