"""Serving the API with uvicorn: in the foreground (``api``), or beside the worker (``run``)."""

from __future__ import annotations

import socket
import threading

import uvicorn

from storage.errors import ValidationFailed
from worker.api.app import create_api
from worker.pipeline.app import App


def bind(host: str, port: int, option: str) -> socket.socket:
    """A listening socket, or a ValidationFailed naming ``option`` when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValidationFailed({option: [f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                                         " (another process has it? choose another port)"]}) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _config(target: object, **kwargs: object) -> uvicorn.Config:
    # Our logging (structlog) stays in charge; per-request access lines are the proxy's job.
    return uvicorn.Config(target, log_config=None, access_log=False, proxy_headers=True,
                          server_header=False, **kwargs)


def serve(app: App, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT. With ``workers`` > 1, uvicorn forks worker processes that each
    build their own App from the environment."""
    sock = bind(host, port, "--port")
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(_config("worker.api.app:create_app", factory=True, workers=workers), sockets=[sock]).run()
        return
    uvicorn.Server(_config(create_api(app))).run(sockets=[sock])


class BackgroundServer:
    """The API on a thread of this process (``run``): started at once, stopped on exit."""

    def __init__(self, app: App, host: str, port: int) -> None:
        self._sock = bind(host, port, "--api-port")
        self.address = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(_config(create_api(app)))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="api", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
