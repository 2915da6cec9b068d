"""A PostgreSQL server that vanishes without a word (its host lost, a failover to
another address): a connection to it fails in seconds, and the next one is made anew,
rather than wait for ever on an answer that never comes.

The server is put behind an address of a network namespace of its own, reached over a
veth pair; taking the address away while the host side still knows where to send
(a permanent neighbour entry) makes every packet to it vanish, with no reset and no
"unreachable" back, as on a network that drops them. That needs root (CAP_NET_ADMIN);
the test is skipped where it cannot be set up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PG_ADMIN, postgres_reachable, wait_until
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from longplay.store.db import make_engine

RELAY = """
import socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
server = socket.create_server((host, port))
while True:
    client, _ = server.accept()
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(path)
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
"""
"""Inside the namespace: TCP on the namespace's address to the server's Unix socket,
which the namespace shares with the host (a file)."""


@dataclass
class Partition:
    """The server at ``address``, and a way to make that address vanish."""

    name: str
    address: str

    def run(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def vanish(self) -> None:
        """Packets to the address still go to the namespace, which drops them."""
        peer_mac = subprocess.run(
            ["ip", "netns", "exec", self.name, "cat", f"/sys/class/net/{self.name}b/address"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        self.run("neigh", "replace", self.address, "lladdr", peer_mac, "dev", f"{self.name}a")
        self.run(
            "netns",
            "exec",
            self.name,
            "ip",
            "addr",
            "del",
            f"{self.address}/24",
            "dev",
            f"{self.name}b",
        )


def _socket_folder() -> str | None:
    """Where the local PostgreSQL's Unix socket is, if it has one this test can reach."""
    for folder in ("/var/run/postgresql", "/tmp"):
        if Path(folder, ".s.PGSQL.5432").exists():
            return folder
    return None


@pytest.fixture
def partition() -> Iterator[Partition]:
    folder = _socket_folder()
    if os.geteuid() != 0 or shutil.which("ip") is None or folder is None:
        pytest.skip("needs root, iproute2 and a local PostgreSQL's Unix socket")
    if not postgres_reachable():
        pytest.skip("no PostgreSQL")
    name = f"lpp{os.getpid() % 10000}"
    subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    made = Partition(name, f"{subnet}.2")
    try:
        made.run("netns", "add", name)
    except subprocess.CalledProcessError:
        pytest.skip("network namespaces cannot be made here")
    relay = None
    try:
        made.run("link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
        made.run("link", "set", f"{name}b", "netns", name)
        made.run("addr", "add", f"{subnet}.1/24", "dev", f"{name}a")
        made.run("link", "set", f"{name}a", "up")
        made.run(
            "netns", "exec", name, "ip", "addr", "add", f"{made.address}/24", "dev", f"{name}b"
        )
        made.run("netns", "exec", name, "ip", "link", "set", f"{name}b", "up")
        relay = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                sys.executable,
                "-c",
                RELAY,
                made.address,
                "5432",
                f"{folder}/.s.PGSQL.5432",
            ]
        )
        yield made
    finally:
        if relay is not None:
            relay.kill()
            relay.wait(10)
        subprocess.run(["ip", "link", "del", f"{name}a"], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_a_server_that_vanishes_fails_its_connections_in_seconds(partition: Partition) -> None:
    admin = make_url(PG_ADMIN)
    url = admin.set(host=partition.address, port=5432).render_as_string(hide_password=False)
    engine = make_engine(url)

    def answers() -> bool:
        try:
            with engine.connect() as connection:
                return connection.execute(text("SELECT 1")).scalar() == 1
        except OperationalError:
            return False

    wait_until(answers, timeout=30)  # the relay is up; the pool now holds a connection
    partition.vanish()
    outcome: list[BaseException | None] = []

    def use() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            outcome.append(None)
        except BaseException as exc:  # the outcome is the test's to judge
            outcome.append(exc)

    began = time.monotonic()
    user = threading.Thread(target=use, daemon=True)
    user.start()
    # The pooled connection's check (30 s unacknowledged), then a new connection's
    # attempt (10 s): well under the kernel's 15 minutes of resending, or for ever.
    user.join(90)
    took = time.monotonic() - began
    assert not user.is_alive(), f"still waiting on the vanished server after {took:.0f} s"
    [failed] = outcome
    assert isinstance(failed, OperationalError), failed
    assert took < 60, took
    engine.dispose()
