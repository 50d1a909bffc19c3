"""Listening sockets for `recsys serve --workers N`.

uvicorn's workers share one listening socket, and the first worker the kernel wakes accepts every connection that is
waiting: a burst of keep-alive connections (a load balancer's pool, a benchmark's clients) can end up mostly on one
worker for its whole life (24 of 32 on one of two workers, measured), and that worker's queue sets the tail latency.
On Linux each worker here binds its own socket to the port with SO_REUSEPORT instead: the kernel spreads new
connections over the workers' sockets, and a worker takes connections only once it listens, which uvicorn does after
the app's startup (the bundle is loaded), so a restarting worker is never handed connections it cannot answer yet."""

from __future__ import annotations

import socket
import sys


def reuse_port_supported() -> bool:
    """True where SO_REUSEPORT spreads connections over the sockets bound to a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening (the server listens once its app has
    started)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class PerWorkerListener:
    """Stands for the listening socket in uvicorn's worker supervisor, which hands its sockets to each worker process
    by pickling them: every worker unpickles this into its own `reuse_port_socket` on the address."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self):
        return reuse_port_socket, (self.host, self.port)
