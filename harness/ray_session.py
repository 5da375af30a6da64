"""The process's one Ray session, for the ray executor: a private local Ray that talks to nobody
beyond this machine, or a cluster given by its address.

A local Ray that harness starts (no ``address``):

- binds 127.0.0.1 everywhere: ``_node_ip_address`` and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's
  switch for "use the loopback address as this node's address"; without it ``ray.init`` replaces
  127.0.0.1 by the address it learns by connecting a UDP socket to a public resolver, 8.8.8.8:53, and
  so does each of Ray's agents);
- sends no usage statistics (``RAY_USAGE_STATS_ENABLED=0``) and starts no dashboard;
- asks no cloud metadata server: Ray's head always starts its API server with the usage-stats
  module, which, before it looks whether usage statistics are enabled, asks the Azure, GCP and AWS
  metadata servers (169.254.169.254, metadata.google.internal) which cloud it runs on, unless the
  cluster launcher's ``~/ray_bootstrap_config.yaml`` exists. Ray 2.60 has no setting that stops it, so
  Ray's own processes start with ``HOME`` set to a private folder holding an empty one; the workers,
  which run the plugins, get the real ``HOME`` back through the job's ``runtime_env``;
- uses token authentication with its own token in a private file (``RAY_AUTH_TOKEN_PATH``), so
  nothing is written to ``~/.ray``;
- keeps its temporary files in a private folder under the cache's ``tmp/`` (or, when that path is too
  long for Unix socket names, the system temporary directory), removed at exit and swept by a later
  run if this one was killed.

Ray reads some of these variables when it is imported, so they are set before ``import ray``. The
session lives until the process exits: several runs in one process (``harness run A.yaml B.yaml``, a
test module) share it.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import Cache
from harness.errors import UserError
from harness.workdirs import PrivateDir, sweep

LOOPBACK = "127.0.0.1"
CACHE_PREFIX, TEMP_PREFIX = "ray-", "harness-ray-"  # its folder under the cache's tmp/, or the system's
# Ray's longest Unix socket path below our folder, "/r/session_<date>_<time>_<us>_<pid>/sockets/
# plasma_store", has up to 66 characters, and a socket path at most 107 bytes
MAX_FOLDER = 107 - 66

#: set before ``import ray`` when harness starts a local Ray (see the module's docstring)
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


@dataclass
class _Session:
    address: str | None
    ray: Any
    own: PrivateDir | None = None  # the local Ray's private folder
    saved_env: dict[str, str | None] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # what executors keep for the session (actors)


_session: _Session | None = None
_imported_here = False  # ray was first imported by _start_local, under its settings
_TOKEN = secrets.token_hex(32)  # one per process: Ray's driver caches the token it first read


def connect(address: str | None, cache: Cache) -> Any:
    """The ``ray`` module, connected: to ``address``, or to a private local Ray started on first use."""
    global _session
    if _session is not None:
        if _session.address != address:
            raise UserError(f"this process is connected to Ray at {_session.address or 'a private local Ray'}; "
                            f"one run cannot use another (extraction.address: {address or 'none'})")
        return _session.ray
    already = sys.modules.get("ray")
    if already is not None and already.is_initialized():  # a library caller's own Ray: theirs to configure
        _session = _Session(address, already)
        return already
    if address is None and already is not None and not _imported_here:
        raise UserError("Ray was imported before harness could configure its private local Ray (it reads its "
                        "settings at import); start harness first, or set extraction.address")
    _session = _start_local(cache) if address is None else _join(address)
    atexit.register(shutdown)
    return _session.ray


def session_state() -> dict[str, Any]:
    """A dict that lives as long as the current session (:func:`connect` first)."""
    if _session is None:
        raise RuntimeError("no Ray session: call connect first")
    return _session.state


def _join(address: str) -> _Session:
    _reachable(address)
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray, an optional extra: pip install 'harness[ray]'") from None
    try:
        ray.init(address=address, namespace="harness", log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot connect to the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    return _Session(address, ray)


def _reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a head that does not answer: ``ray.init`` would wait for it for minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray reads itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _start_local(cache: Cache) -> _Session:
    global _imported_here
    own = _private_dir(cache)
    saved = {k: os.environ.get(k) for k in (*LOCAL_ENV, "RAY_AUTH_TOKEN_PATH", "HOME")}
    try:
        home = own.path / "home"
        home.mkdir()
        (home / "ray_bootstrap_config.yaml").write_text("{}\n")  # see the module's docstring
        token = own.path / "auth_token"
        token.touch(mode=0o600)
        token.write_text(_TOKEN)
        os.environ.update(LOCAL_ENV, RAY_AUTH_TOKEN_PATH=str(token))
        real_home = os.path.expanduser("~")
        os.environ["HOME"] = str(home)  # for the processes ray.init starts; restored below
        _imported_here = _imported_here or "ray" not in sys.modules
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray, an optional extra: pip install 'harness[ray]'") from None
        try:
            ray.init(include_dashboard=False, _node_ip_address=LOOPBACK, _temp_dir=str(own.path / "r"),
                     namespace="harness", log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": {"HOME": real_home}})
        finally:
            _restore({"HOME": saved["HOME"]})
    except BaseException:
        _restore(saved)
        own.release()
        raise
    return _Session(None, ray, own, saved)


def _private_dir(cache: Cache) -> PrivateDir:
    """A private folder for the local Ray: under the cache's tmp/ when short enough for socket names,
    else in the system's temporary directory."""
    def fits(parent: Path, prefix: str) -> bool:
        return len(os.fsencode(parent.resolve())) + 1 + len(prefix) + 8 <= MAX_FOLDER  # (mkdtemp adds 8)

    parent, prefix = cache.tmp, CACHE_PREFIX
    if not fits(parent, prefix):
        parent, prefix = Path(tempfile.gettempdir()), TEMP_PREFIX
        if not fits(parent, prefix):
            parent = Path("/tmp")
        sweep(parent, TEMP_PREFIX)  # those of killed runs (the cache's tmp/ is swept by the cache itself)
    try:
        return PrivateDir(parent, prefix)
    except OSError as exc:
        raise UserError(f"cannot create a folder for Ray in {parent}: {exc.strerror or exc}") from None


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def shutdown() -> None:
    """Stop (or leave) this process's Ray session; a local Ray's private folder goes with it."""
    global _session
    session, _session = _session, None
    if session is None:
        return
    if session.own is not None or session.address is not None:
        session.ray.shutdown()
    if session.saved_env is not None:
        _restore(session.saved_env)
    if session.own is not None:
        session.own.release()
