"""Shared fixtures. The `sim_server` fixture (a real simd) comes from libsim's pytest plugin."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

import libsim

pytest_plugins = ["libsim.pytest_plugin"]

SOURCE_ROOT = Path(__file__).resolve().parents[3]

# Waits on the network are bounded by this (a loaded CI machine, bcrypt cost 4); tests that expect silence use
# much shorter windows.
TIMEOUT = 15.0


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"libsim {libsim.__version__} from {Path(libsim.__file__).parent}",
            f"SIM_SIMD={os.environ.get('SIM_SIMD', '(unset)')}"]


@pytest.fixture(scope="session")
def noise_vectors_dir() -> Path:
    path = Path(os.environ.get("SIM_NOISE_VECTORS") or SOURCE_ROOT / "tests" / "vectors" / "noise")
    if not path.is_dir():
        pytest.fail(f"Noise vectors not found at {path} (set SIM_NOISE_VECTORS)")
    return path


@pytest.fixture
def connect(sim_server: libsim.Server) -> Iterator[Callable[..., libsim.Client]]:
    """connect(**options) -> a Client of `sim_server`, closed at teardown."""
    clients: list[libsim.Client] = []

    def make(**options: object) -> libsim.Client:
        client = sim_server.connect(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def drain(client: libsim.Client, quiet: float = 0.3) -> list[libsim.Event]:
    """Every event that arrives until `quiet` seconds pass without one."""
    return list(client.events(timeout=quiet))


def login_pair(connect: Callable[..., libsim.Client], **options: object) -> tuple[libsim.Client, libsim.Client]:
    """bob logs in, then alice logs in asking for bob: both hold the conversation key when this returns."""
    bob = connect(**options)
    bob.login("bob", "bob's password")
    alice = connect(**options)
    alice.login("alice", "alice's password", "bob")
    alice.wait_for(libsim.EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    bob.wait_for(libsim.EventKind.KEY_ASSIGNED, "alice", timeout=TIMEOUT)
    return alice, bob
