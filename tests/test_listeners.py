"""Per-worker SO_REUSEPORT listeners (`api.listeners`): what uvicorn's supervisor pickles for each worker comes back
as that worker's own socket on the port, several of them listen at once, and the kernel hands connections to each."""

from __future__ import annotations

import pickle
import socket

import pytest

from api.listeners import PerWorkerListener, reuse_port_socket, reuse_port_supported

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT load balancing is Linux-only")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_unpickled_listener_is_its_own_socket_on_the_port():
    port = free_port()
    listener = PerWorkerListener("127.0.0.1", port)
    first, second = pickle.loads(pickle.dumps(listener)), pickle.loads(pickle.dumps(listener))
    try:
        assert isinstance(first, socket.socket) and first.fileno() != second.fileno()
        assert first.getsockname() == second.getsockname() == ("127.0.0.1", port)
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        first.listen(64)
        second.listen(64)
        first.setblocking(False)
        second.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]  # 64 source ports, hashed
        accepted = [0, 0]
        for n, sock in enumerate((first, second)):
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted[n] += 1
        for client in clients:
            client.close()
        assert sum(accepted) == 64
        assert min(accepted) >= 12  # both sockets get connections (binomial(64, ½) below 12: p < 1e-6)
    finally:
        first.close()
        second.close()


def test_a_socket_that_does_not_listen_gets_no_connections():
    """uvicorn listens after the app's startup: a worker still loading its bundle is never handed a connection."""
    port = free_port()
    ready, loading = reuse_port_socket("127.0.0.1", port), reuse_port_socket("127.0.0.1", port)
    try:
        ready.listen(64)
        ready.settimeout(5)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
        for _ in clients:
            ready.accept()[0].close()
        loading.listen(1)
        loading.setblocking(False)
        with pytest.raises(BlockingIOError):
            loading.accept()
        for client in clients:
            client.close()
    finally:
        ready.close()
        loading.close()


def test_a_port_bound_without_reuse_port_is_refused():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        with pytest.raises(OSError):
            reuse_port_socket("127.0.0.1", other.getsockname()[1])
