"""--ray-address: an address where nothing listens is one error within seconds (Ray itself retried it for minutes,
logging GCS timeouts: 2 min 43 s for `nohost`)."""

from __future__ import annotations

import socket
import types

import pytest

from jobs.batch import ray_engine
from jobs.batch.layout import BatchError


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_address_that_accepts_passes_and_one_that_refuses_is_named():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        ray_engine.check_reachable(f"127.0.0.1:{port}")
        ray_engine.check_reachable(f"ray://127.0.0.1:{port}")
    port = closed_port()
    with pytest.raises(BatchError, match=f"cannot reach a Ray cluster at 'ray://127.0.0.1:{port}' \\(Connection "
                                         "refused\\): start one there"):
        ray_engine.check_reachable(f"ray://127.0.0.1:{port}")
    with pytest.raises(BatchError, match="at '127.0.0.1:x' \\(not a port number\\)"):
        ray_engine.check_reachable("127.0.0.1:x")
    with pytest.raises(BatchError, match="at 'no-such-host.invalid' \\("):
        ray_engine.check_reachable("no-such-host.invalid")


def test_auto_and_local_are_left_to_ray_and_a_bare_host_takes_rays_default_port(monkeypatch):
    tried = []
    monkeypatch.setattr(ray_engine.socket, "create_connection",
                        lambda target, timeout: tried.append(target) or types.SimpleNamespace(close=lambda: None))
    ray_engine.check_reachable("auto")
    ray_engine.check_reachable("local")
    ray_engine.check_reachable("head")
    ray_engine.check_reachable("ray://head")
    ray_engine.check_reachable("ray://head:20001/")
    assert tried == [("head", 6379), ("head", 10001), ("head", 20001)]


def test_a_session_checks_the_address_before_ray_starts_retrying(monkeypatch):
    def init(**kwargs):
        raise AssertionError("ray.init reached")

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=init, shutdown=lambda: None)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    with pytest.raises(BatchError, match="cannot reach a Ray cluster"):
        with ray_engine.ray_session(f"127.0.0.1:{closed_port()}"):
            pass
    with pytest.raises(AssertionError, match="ray.init reached"):  # no address: a local Ray, nothing to check
        with ray_engine.ray_session(None):
            pass


def test_without_an_address_a_session_starts_its_own_ray_even_beside_a_running_cluster(monkeypatch):
    """`ray.init()` with no address joins a cluster that `ray start` left running on the machine, and then refuses
    `num_cpus` with a ValueError: `batch-score --engine ray` failed so after the README's several-machines steps."""
    calls = []
    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kwargs: calls.append(kwargs),
                                 shutdown=lambda: None)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_engine, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray_engine, "check_actors_start", lambda ray, address: None)
    with ray_engine.ray_session(None, 3):
        pass
    with ray_engine.ray_session("auto", 3):
        pass
    assert [(c["address"], c["num_cpus"]) for c in calls] == [("local", 3), ("auto", None)]


def test_auto_with_no_cluster_running_is_one_error_naming_the_projects_option(monkeypatch):
    """Ray's own message named its `--address` flag and `RAY_ADDRESS`, not `--ray-address`."""
    def init(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=init, shutdown=lambda: None)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    with pytest.raises(BatchError, match=r"no Ray cluster to join for --ray-address 'auto' \(Could not find any "
                                         r"running Ray instance\): start one \(ray start --head\)"):
        with ray_engine.ray_session("auto"):
            pass


class ActorError(Exception):
    """Stands for ray.exceptions.RayActorError (Ray's ActorDiedError is one)."""


ActorDiedError = type("ActorDiedError", (ActorError,), {})


def fake_ray(init=lambda **kwargs: None, ready=None):
    """A `ray` whose init and actor start behave as told; records shutdown and kill."""
    calls = []

    def get(ref, timeout):
        if isinstance(ready, BaseException):
            raise ready
        return True

    actor = types.SimpleNamespace(ready=types.SimpleNamespace(remote=lambda: "ref"))
    exceptions = types.SimpleNamespace(RayActorError=ActorError, GetTimeoutError=TimeoutError,
                                       AuthenticationError=type("AuthenticationError", (Exception,), {}))
    return types.SimpleNamespace(
        is_initialized=lambda: False, init=init, shutdown=lambda: calls.append("shutdown"), get=get,
        remote=lambda **options: lambda cls: types.SimpleNamespace(remote=lambda: actor),
        kill=lambda handle: calls.append("kill"), exceptions=exceptions, __version__="2.60.0", calls=calls)


def test_a_head_that_refuses_the_command_is_one_error_naming_token_authentication(monkeypatch):
    """A head started with RAY_AUTH_MODE=token and a command without its token: Ray logged GCS 'InvalidAuthToken'
    warnings for 20 s, then said 'Failed to connect to Ray cluster at 192.0.2.2:6391', which the command cut to
    'no Ray cluster to join … (Failed to connect to Ray cluster at 192)'."""
    def init(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6391")

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(ray_engine, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake_ray(init))
    with pytest.raises(BatchError) as caught:
        with ray_engine.ray_session("192.0.2.2:6391"):
            pass
    assert str(caught.value) == (
        "cannot join the Ray cluster at --ray-address '192.0.2.2:6391' (Failed to connect to Ray cluster at "
        "192.0.2.2:6391): most likely its head and this command differ in token authentication: run this command "
        "with the head's RAY_AUTH_MODE (here RAY_AUTH_MODE unset) and, in token mode, its token (RAY_AUTH_TOKEN or "
        "~/.ray/auth_token; `ray get-auth-token` on the head prints it); or it runs another Ray than this "
        "command's 2.60.0")

    ray = fake_ray()

    def refuse(**kwargs):
        raise ray.exceptions.AuthenticationError("Authentication failed. Note: RAY_AUTH_MODE is currently 'token'.")

    ray.init = refuse
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setattr(ray_engine, "import_ray", lambda: ray)
    with pytest.raises(BatchError, match=r"\(Authentication failed\): most likely .* \(here RAY_AUTH_MODE=token\)"):
        with ray_engine.ray_session("ray://head:10001"):
            pass


def test_actors_cancelled_before_they_start_are_one_error_not_rays_actordied_traceback(monkeypatch):
    """A head started with RAY_AUTH_MODE=disabled and a command with RAY_AUTH_MODE=token: ray.init joined, then
    `batch-score`/`encode` printed Ray Data's ActorDiedError traceback (exit 1). Ray's text, as ray 2.60 gave it."""
    died = ActorDiedError(
        "The actor died unexpectedly before finishing this task.\n\tclass_name: _Probe\n\tactor_id: c85a\n"
        "The actor is dead because all references to the actor were removed including lineage ref count.\n"
        "The actor never ran - it was cancelled before it started running.")
    ray = fake_ray(ready=died)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setattr(ray_engine, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: ray)
    with pytest.raises(BatchError) as caught:
        with ray_engine.ray_session("192.0.2.2:6391"):
            raise AssertionError("the job ran")
    assert str(caught.value).startswith(
        "the Ray cluster at --ray-address '192.0.2.2:6391' cancels this command's actors before they start "
        "(ActorDiedError): most likely its head and this command differ in token authentication: run this command "
        "with the head's RAY_AUTH_MODE (here RAY_AUTH_MODE=token)")
    assert "\n" not in str(caught.value) and ray.calls == ["kill", "shutdown"]  # the Ray it joined is let go


def test_an_actor_that_cannot_start_for_another_reason_names_it_and_a_slow_start_is_left_to_the_job(monkeypatch):
    failed = ActorDiedError("The actor died because of an error raised in its creation task\nTraceback (most "
                            "recent call last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'jobs'")
    monkeypatch.setattr(ray_engine, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake_ray(ready=failed))
    with pytest.raises(BatchError, match=r"^the Ray cluster at --ray-address 'auto' cannot start an actor for this "
                                         r"command \(ModuleNotFoundError: No module named 'jobs'\): this package, as "
                                         r"this command has it, must be installed on every node$"):
        with ray_engine.ray_session("auto"):
            pass
    slow = fake_ray(ready=TimeoutError("Get timed out"))
    monkeypatch.setattr(ray_engine, "import_ray", lambda: slow)
    with ray_engine.ray_session("auto") as ray:
        assert ray is slow
    assert slow.calls == ["kill", "shutdown"]
