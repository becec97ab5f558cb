"""A real ASGI server for the middleware tests, and fakes for calling an ASGI app directly.

``running(app)`` serves an app with uvicorn on a free loopback port in a background thread;
``serving(app)`` does the same inside the caller's event loop (for asyncio clients such as
redis.asyncio, which must stay on one loop). Both wait until the server accepts and stop it,
lifespan shutdown included. Network traffic stays on 127.0.0.1.
"""

import asyncio
import contextlib
import socket
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")


class Endpoint:
    """A pure-ASGI app: answers 200 with the request method as the body, accepts WebSockets,
    counts what it served and records the lifespan events it saw."""

    def __init__(self):
        self.served = 0
        self.lifespan = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()
            self.served += 1
            await send({"type": "websocket.accept", "headers": [(b"x-app", b"1")]})
            return
        self.served += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": scope["method"].encode()})


def loopback_socket():
    """A listening socket on a free loopback port, handed to uvicorn (no port race). Its
    accepted connections inherit TCP_NODELAY: without it each response, written in two
    parts, waits about 40 ms for the client's delayed ACK."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def uvicorn_server(app):
    return uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="critical",
                                         access_log=False))


@contextlib.contextmanager
def running(app):
    """uvicorn serving ``app`` in a background thread; yields an httpx client bound to it.
    Waits until the server accepts, and stops it (lifespan shutdown included) on exit."""
    sock = loopback_socket()
    server = uvicorn_server(app)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                          timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


@contextlib.asynccontextmanager
async def serving(app):
    """uvicorn serving ``app`` as a task of the running event loop; yields an
    ``httpx.AsyncClient`` bound to it."""
    sock = loopback_socket()
    server = uvicorn_server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                     timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


# -- calling an ASGI app directly ----------------------------------------------------------


def http_scope(path="/", method="GET", headers=(), client=("10.0.0.1", 5000)):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "path": path, "headers": list(headers), "client": client}


def ws_scope(extensions=None, client=("10.0.0.1", 5000)):
    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": client}
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


async def call(app, scope, incoming=({"type": "http.request", "body": b""},)):
    """Run one ASGI call; the messages the app sent."""
    pending = list(incoming)
    sent = []

    async def receive():
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent
