"""Faults of the machine: full disks, concurrent runs on one cache, killed and terminated runs, and
directories that cannot be written. Each is one ``error:`` line (exit 2) or no error at all, and
never leaves a corrupt cache behind.

The full-disk and read-only cases mount small tmpfs file systems (root only; skipped otherwise), so
that a disk really runs out of blocks: a write through a memory map then raises SIGBUS, which no
monkeypatch reproduces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.cache import Cache
from harness.errors import UserError
from plugin_site import harness_process, run_harness, toy_site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return toy_site(tmp_path_factory.mktemp("site"))


def _spec(tmp_path: Path, descriptor: str = "{name: mean_color_toy}", **extra: str) -> Path:
    spec = tmp_path / "spec.yaml"
    lines = ["task: faults", f"dataset: {{name: toy, root: {tmp_path / 'data'}}}", f"descriptor: {descriptor}",
             "postprocess: [{name: center}]", "index: {name: brute, k: 3}", "metrics: [{name: recall_at, k: 1}]",
             "extraction: {workers: 1, shard_size: 4}", *[f"{k}: {v}" for k, v in extra.items()]]
    spec.write_text("\n".join(lines) + "\n")
    return spec


def _entries_are_complete(cache: Path) -> None:
    """Every published entry has its meta.json, and no private directory or lock is left in tmp/."""
    for entry in (cache / "objects").glob("*/*"):
        assert (entry / "meta.json").is_file(), entry
    assert not list((cache / "tmp").glob("*")) if (cache / "tmp").exists() else True


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


# -- full disks (point 8) -------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs file systems under tmp_path: ``tmpfs(size_mb, ro=False) -> Path``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size_mb: int, ro: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        opts = f"size={size_mb}m" + (",ro" if ro else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True, text=True)
        if res.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.mark.parametrize("size_mb", [10, 12])  # 10: the disk fills inside a memory map (SIGBUS before the fix);
def test_a_full_disk_is_one_line_and_a_rerun_with_space_completes(site, tmp_path, tmpfs, size_mb):  # 12: np.save
    spec = _spec(tmp_path, "{name: random, dim: 100000}")  # 400 KB per image: 18 images fill the disk
    small = tmpfs(size_mb)
    res = run_harness(site, "run", str(spec), "-q", "--cache-dir", str(small / "cache"), "--output",
                      str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        f"error: no space left on the device holding the cache {small / 'cache'} (free some space, or use --cache-dir)"]
    _entries_are_complete(small / "cache")
    subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space again
    res = run_harness(site, "run", str(spec), "-q", "--json", "--cache-dir", str(small / "cache"), "--output",
                      str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    again = run_harness(site, "run", str(spec), "-q", "--json", "--no-cache", "--output", str(tmp_path / "out"),
                        cwd=tmp_path)
    assert json.loads(res.stdout)["metrics"] == json.loads(again.stdout)["metrics"]
    _entries_are_complete(small / "cache")


def test_a_full_output_directory_is_one_line(site, tmp_path, tmpfs):
    spec = _spec(tmp_path)
    small = tmpfs(1)
    filler = small / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # leave no block free
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    res = run_harness(site, "run", str(spec), "-q", "--output", str(small / "out"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [f"error: no space left on the device holding the output directory {small / 'out'}"]
    assert not [p for p in small.rglob("*") if p.is_file() and p != filler]  # no partial document


def test_a_read_only_cache_or_output_is_one_line(site, tmp_path, tmpfs):
    spec = _spec(tmp_path)
    ro = tmpfs(1, ro=True)
    res = run_harness(site, "run", str(spec), "-q", "--cache-dir", str(ro / "cache"), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"error: cannot write the cache {ro / 'cache'}: Read-only file system"]
    res = run_harness(site, "run", str(spec), "-q", "--output", str(ro), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1].startswith(f"error: cannot write the output directory {ro}: ")
    assert res.stderr.splitlines()[-1].endswith(": Read-only file system")


def test_a_disk_full_write_is_a_user_error_without_a_tmpfs(tmp_path, monkeypatch):
    """The same translation where no tmpfs can be mounted: the shard writer reports ENOSPC."""
    import errno

    import toy_plugins
    from harness import npy
    from harness.runner import run_spec
    from harness.testing import registry_with

    def full(self, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(npy.NpyWriter, "write", full)
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(toy_plugins.spec(str(tmp_path / "data"))))
    with pytest.raises(UserError) as info:
        run_spec(str(spec), cache_dir=str(tmp_path / "cache"), output_dir=None, registry=registry_with(toy_plugins))
    assert str(info.value) == (f"no space left on the device holding the cache {tmp_path / 'cache'} "
                               "(free some space, or use --cache-dir)")
    _entries_are_complete(tmp_path / "cache")


# -- environment errors (point 12) ------------------------------------------------------------------


def test_unwritable_cache_and_output_locations_are_user_errors(site, tmp_path):
    spec = _spec(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = {
        ("--output", str(afile / "sub")): f"error: cannot write the output directory {afile / 'sub'}: Not a directory",
        ("--cache-dir", str(afile / "cache")): f"error: cannot write the cache {afile / 'cache'}: {afile / 'cache'}",
        ("--cache-dir", str(tmp_path / ("x" * 300))): "File name too long",
    }
    for args, expected in cases.items():
        res = run_harness(site, "run", str(spec), "-q", *args, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, lines)
    if os.geteuid() != 0:  # permissions bind everyone but root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        res = run_harness(site, "run", str(spec), "-q", "--cache-dir", str(locked), cwd=tmp_path)
        assert res.returncode == 2 and "Permission denied" in res.stderr


# -- concurrent runs on one cache (point 9) -------------------------------------------------------------


def test_removing_an_entry_another_run_removed_is_not_an_error(tmp_path, monkeypatch):
    a, b = Cache(tmp_path / "c"), Cache(tmp_path / "c")
    with a.write("k" * 64) as work:
        (work / "x").write_text("1")
    assert b.lookup("k" * 64) is not None
    a.remove("k" * 64)
    monkeypatch.setattr(Path, "exists", lambda self: True)  # b checked before a removed it
    b.remove("k" * 64)
    monkeypatch.undo()
    assert a.lookup("k" * 64) is None
    _entries_are_complete(tmp_path / "c")


def test_two_writers_of_one_key_both_succeed(tmp_path):
    a, b = Cache(tmp_path / "c"), Cache(tmp_path / "c")
    with a.write("k" * 64) as wa:
        (wa / "x").write_text("a")
        with b.write("k" * 64) as wb:
            (wb / "x").write_text("b")
    assert (a.lookup("k" * 64) / "x").read_text() == "b"  # the first published wins, the other is dropped
    _entries_are_complete(tmp_path / "c")


def test_result_documents_never_overwrite_each_other(tmp_path, monkeypatch):
    from harness.results import write_document

    doc = {"task": "t", "created": "2026-01-01T00:00:00Z", "spec": {"hash": "ab" * 32}, "n": 0}
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self.suffix == ".json" else real_exists(self))
    paths = [write_document({**doc, "n": i}, tmp_path) for i in range(3)]  # as if each checked before the others wrote
    monkeypatch.undo()
    assert len(set(paths)) == 3
    assert sorted(json.loads(p.read_text())["n"] for p in paths) == [0, 1, 2]
    assert not list(tmp_path.glob(".*"))  # no temporary left


def test_simultaneous_runs_on_one_cache_all_succeed_with_one_document_each(site, tmp_path):
    spec = _spec(tmp_path)
    n = 4
    # the toy dataset writes its images on first use, unsafely: build it before the concurrent runs
    assert run_harness(site, "run", str(spec), "-q", "--no-cache", "--output", str(tmp_path / "first"),
                       cwd=tmp_path).returncode == 0
    cold = [harness_process(site, "run", str(spec), "-q", "--output", str(tmp_path / "out"), cwd=tmp_path)
            for _ in range(n)]  # all compute the same keys, publish and supersede the same shards
    for proc in cold:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    warm = [harness_process(site, "run", str(spec), "-q", "--output", str(tmp_path / "out"), cwd=tmp_path)
            for _ in range(n)]  # all cached: they finish within the same second
    for proc in warm:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    docs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("faults-*.json")]
    assert len(docs) == 2 * n
    assert len({json.dumps(d["metrics"]) for d in docs}) == 1
    _entries_are_complete(tmp_path / "cache")


# -- killed and terminated runs (point 10) ----------------------------------------------------------


def _private_dirs(cache: Path) -> list[Path]:
    tmp = cache / "tmp"
    return [p for p in tmp.iterdir() if p.is_dir()] if tmp.exists() else []


def test_the_temp_dir_of_a_killed_run_is_swept_by_the_next_run(site, tmp_path):
    slow = _spec(tmp_path, "{name: mean_color_toy, delay: 0.3}")
    proc = harness_process(site, "run", str(slow), "-q", cwd=tmp_path)
    _wait_for(lambda: _private_dirs(tmp_path / "cache"))
    left = _private_dirs(tmp_path / "cache")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert all(p.exists() for p in left)  # kill -9: nothing could clean up
    fast = _spec(tmp_path, "{name: mean_color_toy, grid: 4}")
    res = run_harness(site, "run", str(fast), "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not any(p.exists() for p in left)
    _entries_are_complete(tmp_path / "cache")


def test_a_live_runs_temp_dir_is_never_swept(tmp_path):
    from harness.workdirs import PrivateDir, sweep

    holder = subprocess.Popen(
        [os.sys.executable, "-c", "import sys, time; from harness.workdirs import PrivateDir; "
         f"d = PrivateDir({str(tmp_path / 'tmp')!r}, 'live-'); print(d.path, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    other = Path(holder.stdout.readline().strip())
    mine = PrivateDir(tmp_path / "tmp", "mine-")
    old = time.time() - 10 * 24 * 3600
    os.utime(other, (old, old))  # age says nothing: the owner is alive
    assert sweep(tmp_path / "tmp") == 0
    assert other.is_dir() and mine.path.is_dir()
    holder.kill()
    holder.wait()
    assert sweep(tmp_path / "tmp") == 1  # its owner is gone now
    assert not other.exists() and mine.path.is_dir()
    mine.release()
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("no_cache", [False, True])
def test_sigterm_cleans_up_like_sigint(site, tmp_path, no_cache):
    import tempfile

    slow = _spec(tmp_path, "{name: mean_color_toy, delay: 0.3}")
    before = set(Path(tempfile.gettempdir()).glob("harness-nocache-*"))
    proc = harness_process(site, "run", str(slow), "-q", *(["--no-cache"] if no_cache else []), cwd=tmp_path)
    if no_cache:
        _wait_for(lambda: any(p.is_dir() and any(p.rglob("*")) for p in
                              set(Path(tempfile.gettempdir()).glob("harness-nocache-*")) - before))
    else:
        _wait_for(lambda: _private_dirs(tmp_path / "cache"))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.splitlines() == ["terminated"]
    assert not _private_dirs(tmp_path / "cache")
    assert set(Path(tempfile.gettempdir()).glob("harness-nocache-*")) - before == set()
    _entries_are_complete(tmp_path / "cache")
