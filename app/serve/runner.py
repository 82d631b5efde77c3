"""Run the HTTP server on its own thread and event loop (uvicorn), start and stop it cleanly.

The socket is bound on the caller's thread, so a port in use fails at once with a clear
OSError and port 0 gives a free port whose number is known before the thread runs.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from app.serve.server import build_app
from app.serve.session import ServeSession

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 8000


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        self._started_event.set()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP. Without it Nagle's algorithm holds each small SSE chunk (and the body
    # after the headers) until the client's delayed ACK: about 40 ms per write.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ServerThread:
    def __init__(self, session: ServeSession, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 *, log_level: str = "warning") -> None:
        self.session = session
        self.host = host
        self._sock = bind_socket(host, port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(build_app(session), log_level=log_level, access_log=False,
                                timeout_graceful_shutdown=2, lifespan="off")
        self._started = threading.Event()
        self._server = _Server(config, self._started)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0, *, wait: bool = True) -> "ServerThread":
        """Run the server thread; with wait, return once it accepts connections. Without (a GUI
        thread must not block), connections made meanwhile wait in the bound socket's backlog."""
        self._thread = threading.Thread(target=self._run, name="workbench-serve", daemon=True)
        self._thread.start()
        if not wait:
            return self
        if not self._started.wait(timeout) and self.error is None:
            raise RuntimeError("the server did not start in time")
        if self.error is not None:
            raise RuntimeError(f"the server failed to start: {self.error}")
        return self

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that started us
            self.error = exc
            log.exception("server thread failed")
        finally:
            self._started.set()

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> bool:
        """Abort what the server has in flight, close connections, join; True when joined."""
        self.session.close()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()
        return not self.is_running
