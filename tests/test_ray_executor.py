"""The Ray executor (``extraction: {executor: ray}``): the same vectors and cache keys as the local
executor, a killed worker's shard redone and finished shards never, worker errors as one line, and
no traffic beyond this machine.

The Ray scenarios run once per module, in one process (``ray_driver.py``) and so one Ray session,
inside a private network namespace (``unshare -rn``: loopback up, documentation addresses 192.0.2.1
and 2001:db8::1 on it so that programs behave as on a machine with a network, no route anywhere) and
under ``strace -f``, which records every address any process of the tree connects, binds or sends
to: the test fails if one is outside 127.0.0.0/8 and ::1, even though the namespace lets nothing
out. HOME and TMPDIR point into the test's own folder, and the real ``~/.ray`` must not change.

Without Ray (or unshare, ip and strace) these tests skip; with HARNESS_REQUIRE_RAY=1 (``.ci/run``)
they fail instead.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from harness.spec import load_spec
from harness.testing import registry_with

TESTS = Path(__file__).parent
SYSCALLS = "connect,bind,sendto,sendmsg,sendmmsg"
# in the namespace: loopback up, two documentation addresses (RFC 5737 / 3849) so that getaddrinfo's
# AI_ADDRCONFIG sees a "network" and lookups are attempted, then the command under strace
SANDBOX = ("ip link set lo up && ip addr add 192.0.2.1/32 dev lo && { ip addr add 2001:db8::1/128 dev lo || true; } "
           f"&& exec strace -f -qq -s 0 -e trace={SYSCALLS} -o \"$0\" \"$@\"")
ADDRESS = re.compile(r'sin_addr=inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def unavailable(reason: str) -> None:
    """Skip, unless the environment requires the Ray tests (``.ci/run`` does): then fail."""
    if os.environ.get("HARNESS_REQUIRE_RAY"):
        pytest.fail(f"HARNESS_REQUIRE_RAY is set but {reason}")
    pytest.skip(reason)


def need_sandbox() -> None:
    for tool in ("unshare", "ip", "strace"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (apt-get install util-linux iproute2 strace): .ci/run installs it")
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"no private network namespace here (unshare -rn: {probe.stderr.strip()[:200]})")


def sandboxed(trace: Path, argv: list[str], **run) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-rn", "sh", "-c", SANDBOX, str(trace), *argv], **run)


def inet_addresses(trace: str) -> list[str]:
    """Every IPv4/IPv6 address in the traced calls, in order."""
    return [a or b for a, b in ADDRESS.findall(trace)]


def outside(addresses: list[str]) -> list[str]:
    """The addresses beyond this machine's loopback (the unspecified 0.0.0.0 and :: included: a socket
    bound to them listens on every interface)."""
    out = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        mapped = getattr(address, "ipv4_mapped", None)
        if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
            out.append(text)
    return out


# -- the measurement itself -------------------------------------------------------------------------

def test_outside_addresses_are_found_in_strace_lines():
    lines = textwrap.dedent('''\
        12 connect(3, {sa_family=AF_INET, sin_port=htons(6379), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
        12 bind(4, {sa_family=AF_INET6, sin6_port=htons(0), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
        12 connect(5, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0
        13 connect(23, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("169.254.169.254")}, 16) = -1 ENETUNREACH (Network is unreachable)
        13 sendmsg(6, {msg_name={sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, msg_namelen=16}, 0) = -1 ENETUNREACH
        14 connect(6, {sa_family=AF_INET6, sin6_port=htons(53), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:4860:4860::8888", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH
        15 bind(7, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("0.0.0.0")}, 16) = 0
        15 connect(8, {sa_family=AF_UNIX, sun_path="/tmp/x/sockets/raylet"}, 110) = 0
        ''')
    found = inet_addresses(lines)
    assert len(found) == 7
    assert outside(found) == ["169.254.169.254", "10.255.255.53", "2001:4860:4860::8888", "0.0.0.0"]


def test_the_sandbox_records_attempts_to_reach_outside(tmp_path):
    """The measurement can fail: attempts to reach outside addresses, which the namespace refuses,
    are in the trace all the same."""
    need_sandbox()
    attempt = textwrap.dedent('''\
        import socket
        for family, kind, address in [(socket.AF_INET, socket.SOCK_STREAM, ("192.0.2.55", 80)),
                                      (socket.AF_INET, socket.SOCK_DGRAM, ("198.51.100.7", 53)),
                                      (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 9))]:
            s = socket.socket(family, kind)
            try:
                s.sendto(b"x", address) if kind == socket.SOCK_DGRAM else s.connect(address)
            except OSError:
                pass
        socket.socket().bind(("0.0.0.0", 0))
        ''')
    trace = tmp_path / "trace.log"
    done = sandboxed(trace, [sys.executable, "-c", attempt], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = inet_addresses(trace.read_text())
    assert "127.0.0.1" in found
    assert outside(found) == ["192.0.2.55", "198.51.100.7", "0.0.0.0"]


# -- spec validation (no Ray needed) --------------------------------------------------------------

def _spec_error(tmp_path, extraction: str, monkeypatch=None) -> str:
    import toy_plugins

    from harness.errors import SpecError

    spec = toy_plugins.spec(str(tmp_path / "data"))
    del spec["extraction"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec) + f"extraction: {extraction}\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(path), [], registry_with(toy_plugins))
    return str(info.value)


def test_unknown_executor_says_which_exist(tmp_path):
    text = _spec_error(tmp_path, "{executor: rya}")
    assert text.endswith("extraction.executor: unknown executor 'rya'; one of: local, ray (did you mean 'ray'?)")
    assert "extraction.exectuor: unknown key (did you mean 'executor'?)" in _spec_error(tmp_path, "{exectuor: ray}")


def test_ray_executor_without_ray_is_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    text = _spec_error(tmp_path, "{executor: ray, actors: 2}")
    assert "\n" not in text
    assert text.endswith("extraction.executor: the ray executor needs Ray, an optional extra: pip install 'harness[ray]'")


@pytest.mark.parametrize("extraction, message", [
    ("{address: 'head:6379'}", "extraction.address: applies to the ray executor only (add executor: ray)"),
    ("{executor: local, actors: 2}", "extraction.actors: applies to the ray executor only (add executor: ray)"),
    ("{executor: ray, actors: 0}", "extraction.actors: expected an integer from 1 to 4,096, got 0"),
    ("{executor: ray, address: ''}", "extraction.address: expected a Ray cluster address (host:port, ray://host:port or auto), got ''"),
])
def test_ray_settings_are_checked(tmp_path, extraction, message):
    if "executor: ray" in extraction and importlib.util.find_spec("ray") is None:
        unavailable("ray is not installed (pip install -e '.[ray]')")
    assert _spec_error(tmp_path, extraction).endswith(message)


def test_an_address_where_nothing_answers_fails_at_once(tmp_path):
    """(ray.init would retry for minutes.) Port 1 on loopback: nothing listens, nothing leaves."""
    from harness import ray_session
    from harness.cache import Cache
    from harness.errors import UserError

    with pytest.raises(UserError, match=r"^cannot reach the Ray cluster at 127\.0\.0\.1:1: Connection refused$"):
        ray_session.connect("127.0.0.1:1", Cache(tmp_path / "cache"))
    assert ray_session._session is None


# -- Ray, once per module -------------------------------------------------------------------------

def _snapshot(folder: Path) -> list[tuple[str, int]] | None:
    if not folder.exists():
        return None
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def ray_run():
    if importlib.util.find_spec("ray") is None:
        unavailable("ray is not installed (pip install -e '.[ray]')")
    need_sandbox()
    # a short folder: Ray's Unix socket paths under its temp dir must stay below 108 bytes
    root = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp" if Path("/tmp").is_dir() else None))
    home, tmp = root / "home", root / "tmp"
    home.mkdir()
    tmp.mkdir()
    real_ray = Path(os.path.expanduser("~")) / ".ray"
    before = _snapshot(real_ray)
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), HARNESS_LOAD_PLUGINS="",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.pop("HARNESS_CACHE_DIR", None)
    trace, out = root / "trace.log", root / "out.json"
    try:
        done = sandboxed(trace, [sys.executable, str(TESTS / "ray_driver.py"), str(root), str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and out.exists(), f"the Ray scenarios failed:\n{done.stderr[-4000:]}"
        yield {**json.loads(out.read_text()), "trace": trace.read_text(), "home": sorted(os.listdir(home)),
               "real_ray": (before, _snapshot(real_ray)), "stderr": done.stderr}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_ray_gives_the_local_executors_vectors_and_keys(ray_run):
    assert ray_run["same_vectors"] and ray_run["same_metrics"]
    assert ray_run["same_keys"] and all(ray_run["same_keys"].values()), ray_run["same_keys"]
    assert ray_run["fresh_details"]["describe:database"] == {"items": 24, "shards": 6, "shards_reused": 0,
                                                             "executor": "ray"}


def test_a_cached_run_never_starts_ray(ray_run):
    # executor: ray over the local run's cache: the same keys, so every stage is cached
    assert ray_run["cached_statuses"] == ["cached", "not needed"]
    assert ray_run["ray_imported_when_cached"] is False


def test_a_killed_workers_shard_is_redone_and_finished_shards_never(ray_run):
    pid, batches_before = ray_run["crash_marker"].split()
    log = [line.split() for line in ray_run["crash_log"]]
    numbers = [int(n) for n, _ in log]
    # batch = shard here: 2 query, 6 database and 2 train shards, each described exactly once (the
    # killed attempt at the shard of image 8 logged nothing), the shards finished before the kill included
    assert sorted(numbers) == [0, 4, 8, 12, 16, 20, 100, 104, 200, 204]
    assert int(batches_before) >= 1 and any(n < 100 for n in numbers[: int(batches_before)])
    assert pid not in {p for n, p in log if int(n) == 8}  # redone by the replacement worker
    assert ray_run["crash_same_vectors"]
    assert ray_run["crash_details"]["describe:database"]["shards"] == 6


def test_a_workers_user_error_is_one_line(ray_run):
    assert ray_run["worker_error"] == ["UserError", "image 13: refused by the test descriptor"]


def test_no_traffic_beyond_loopback(ray_run):
    found = inet_addresses(ray_run["trace"])
    assert len(found) > 20  # the trace saw Ray's processes talk (over loopback)
    assert outside(found) == []


def test_nothing_written_outside_the_runs_folders(ray_run):
    assert ray_run["home"] == []  # no ~/.ray, no ~/ray_bootstrap_config.yaml in the HOME Ray was given
    before, after = ray_run["real_ray"]
    assert before == after  # the real ~/.ray is untouched
    assert Path(ray_run["ray_dir"]).parent == Path(ray_run["cache_tmp"])  # Ray's temp dir: the cache's tmp/
    assert ray_run["ray_dir_left"] is False  # removed when the session ended
