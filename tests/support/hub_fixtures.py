"""Pytest plugin: a loopback Hub for the whole test session, and no network beyond 127.0.0.1.

Loaded from `tests/conftest.py` (`pytest_plugins = ["support.hub_fixtures"]`), i.e. before any test module is
imported. That matters: `huggingface_hub`, `datasets` and `transformers` read `HF_ENDPOINT`, `HF_HOME`,
`HF_TOKEN`, `HF_HUB_DISABLE_XET` ... once, at import time. So at *plugin import* this module

1. starts the test Hub (`tests/support/hub_server.py`) on 127.0.0.1 with an ephemeral port,
2. points every Hugging Face client at it through the environment (inherited by subprocesses too), with a
   throw-away `HF_HOME` and a dummy write token, and
3. installs a socket guard in this process: name lookups of anything but loopback names and connections to
   anything but loopback addresses fail with `NetworkBlockedError` (recorded in `blocked_network_attempts()`).

The server stops and the temporary `HF_HOME` is removed in `pytest_unconfigure`.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator

import pytest

from support.hub_server import HubServer

TEST_TOKEN = "hf_pathinsight_dummy_write_token_0123456789"  # not a secret: only the test hub accepts it
TEST_USER = "pathinsight-tester"

_CLIENTS = ("huggingface_hub", "datasets", "transformers", "peft", "trl", "evaluate")
_too_early = [name for name in _CLIENTS if name in sys.modules]
if _too_early:
    raise pytest.UsageError(
        f"hub_fixtures must be loaded before {', '.join(_too_early)} is imported (they read HF_ENDPOINT/HF_HOME "
        "at import time). Keep `pytest_plugins = ['support.hub_fixtures']` in tests/conftest.py and do not import these "
        "libraries at the top of conftest.py."
    )

# ------------------------------------------------------------------------------------------- environment
_HF_HOME = tempfile.mkdtemp(prefix="pathinsight-test-hf-home-")
HUB = HubServer(token=TEST_TOKEN, user=TEST_USER).start()

_ENV = {
    "HF_ENDPOINT": HUB.url,
    "HF_HOME": _HF_HOME,
    "HF_TOKEN": TEST_TOKEN,
    "HF_HUB_DISABLE_XET": "1",  # Xet has no LFS fallback; the test hub speaks git-LFS
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # datasets would HEAD an S3 URL to count downloads
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "0",
    "HF_DATASETS_OFFLINE": "0",
    "TRANSFORMERS_OFFLINE": "0",
}
# Variables that would send caches or tokens elsewhere than the temporary HF_HOME / dummy token.
_UNSET = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_DATASETS_CACHE",
    "HF_MODULES_CACHE",
    "HF_XET_CACHE",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "TRANSFORMERS_CACHE",
    "HUGGINGFACE_CO_STAGING",
    "HF_HUB_ENABLE_HF_TRANSFER",
)
for _name in _UNSET:
    os.environ.pop(_name, None)
os.environ.update(_ENV)
for _name in ("NO_PROXY", "no_proxy"):  # never send loopback traffic through a proxy
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost"]))


# ------------------------------------------------------------------------------------------- socket guard
class NetworkBlockedError(ConnectionRefusedError):
    """Raised instead of contacting a non-loopback address during tests."""


_BLOCKED: list[str] = []
_BLOCKED_LOCK = threading.Lock()
_LOCAL_NAMES = {"", "localhost", "ip6-localhost", "ip6-loopback", socket.gethostname().lower()}


def _is_loopback(host: object) -> bool:
    if host is None:
        return True  # passive lookup (bind)
    name = (host.decode() if isinstance(host, bytes) else str(host)).strip("[]").lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _lookup_allowed(host: object) -> bool:
    """Loopback names, or any IP literal: resolving a literal sends nothing (connect() is guarded)."""
    if _is_loopback(host):
        return True
    try:
        ipaddress.ip_address(
            (host.decode() if isinstance(host, bytes) else str(host)).strip("[]").split("%", 1)[0]
        )
        return True
    except ValueError:
        return False


def _block(what: str) -> None:
    with _BLOCKED_LOCK:
        _BLOCKED.append(what)


_real_getaddrinfo = socket.getaddrinfo
_real_gethostbyname = socket.gethostbyname
_real_gethostbyname_ex = socket.gethostbyname_ex
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_lookup(real):  # type: ignore[no-untyped-def]
    """`real` (a name lookup taking the host first) refusing hosts other than loopback."""

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not _lookup_allowed(host):
            _block(f"lookup {host!r}")
            raise socket.gaierror(
                socket.EAI_NONAME, f"network access outside 127.0.0.1 is blocked in tests: {host!r}"
            )
        return real(host, *args, **kwargs)

    return guarded


_guarded_getaddrinfo = _guarded_lookup(_real_getaddrinfo)
_guarded_gethostbyname = _guarded_lookup(_real_gethostbyname)
_guarded_gethostbyname_ex = _guarded_lookup(_real_gethostbyname_ex)


def _check_connect(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = address[0]
        try:
            loopback = ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = _is_loopback(host) and str(host).lower() != socket.gethostname().lower()
        if not loopback:
            _block(f"connect {address!r}")
            raise NetworkBlockedError(f"connection to {address!r} blocked: tests may only contact 127.0.0.1")


def _guarded_connect(self, address):  # type: ignore[no-untyped-def]
    _check_connect(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):  # type: ignore[no-untyped-def]
    _check_connect(self, address)
    return _real_connect_ex(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.gethostbyname = _guarded_gethostbyname
socket.gethostbyname_ex = _guarded_gethostbyname_ex
socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def blocked_network_attempts() -> list[str]:
    """Every lookup/connection the guard refused so far in this session ("lookup 'host'", "connect (...)")."""
    with _BLOCKED_LOCK:
        return list(_BLOCKED)


# ------------------------------------------------------------------------------------------- pytest hooks
def pytest_report_header(config: pytest.Config) -> str:
    return f"test hub: {HUB.url} (HF_HOME={_HF_HOME}; network beyond 127.0.0.1 blocked)"


def pytest_unconfigure(config: pytest.Config) -> None:
    HUB.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def hub() -> Iterator[HubServer]:
    """The running loopback Hub: `.url`, `.token`, `.user`, `.new_repo_id()`, `.requests()`, `.files()`.

    Every Hugging Face client in this process already talks to it (HF_ENDPOINT is set at plugin import).
    Repos persist for the session, so use `hub.new_repo_id("name")` for a fresh id per test.
    """
    yield HUB


@pytest.fixture
def hub_mark(hub: HubServer) -> int:
    """Request-log position at the start of the test: `hub.requests(..., since=hub_mark)`."""
    return hub.mark()
