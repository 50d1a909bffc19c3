"""A fake Redis server for outage tests: it accepts connections and answers like an empty Redis until `hang()`,
then reads every command and never answers (a Redis that is stuck, or a proxy whose backend is gone)."""

from __future__ import annotations

import socket
import threading

REPLIES = {b"PING": b"+PONG\r\n", b"GET": b"$-1\r\n", b"LLEN": b":0\r\n", b"LRANGE": b"*0\r\n",
           b"ZRANGEBYSCORE": b"*0\r\n", b"ZREVRANGE": b"*0\r\n", b"SMEMBERS": b"*0\r\n",
           b"SSCAN": b"*2\r\n$1\r\n0\r\n*0\r\n", b"EVALSHA": b":1\r\n",
           b"HELLO": b"-ERR unknown command 'HELLO'\r\n"}  # as Redis 5: redis-py 6+ falls back to RESP2


def _commands(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The command names of the complete RESP arrays at the start of `buffer`, and what is left of it."""
    names = []
    while buffer.startswith(b"*"):
        head, sep, rest = buffer.partition(b"\r\n")
        if not sep:
            break
        args, complete = [], True
        for _ in range(int(head[1:])):
            size, sep, rest = rest.partition(b"\r\n")
            if not sep or len(rest) < int(size[1:]) + 2:
                complete = False
                break
            args.append(rest[:int(size[1:])])
            rest = rest[int(size[1:]) + 2:]
        if not complete:
            break
        names.append(args[0].upper() if args else b"")
        buffer = rest
    return names, buffer


class HungRedis:
    """Listens on 127.0.0.1 (`url`); a context manager that closes every connection on exit. `hang_on`: a command
    name (b"GET") that hangs it when it arrives (a Redis that stops answering in the middle of a job)."""

    def __init__(self, hang_on: bytes | None = None) -> None:
        self.hang_on = hang_on
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._answering = threading.Event()
        self._answering.set()
        self._connections: list[socket.socket] = []
        self._count = threading.Lock()
        self.unanswered = 0  # commands read since `hang()`
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        self._answering.clear()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                return
            if not data:
                return
            names, buffer = _commands(buffer + data)
            for name in names:
                if name == self.hang_on:
                    self.hang()
                if self._answering.is_set():
                    connection.sendall(REPLIES.get(name, b"+OK\r\n"))
                else:
                    with self._count:
                        self.unanswered += 1

    def close(self) -> None:
        self._listener.close()
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> HungRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
