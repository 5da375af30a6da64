"""Hostile inputs cost what their files weigh: declared sizes, shared references and aliases that
expand, files that never end. Each gets one ``error:`` line and exit code 2, in a process whose
address space is capped (a reader that believed the file would die of MemoryError, exit 1) and
under a timeout (a reader that walked the expansion would not finish)."""

from __future__ import annotations

import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.errors import SubmissionError, UserError

PY = sys.executable
#: Address-space cap of the CLI processes below: python + numpy + h5py + faiss reserve about 0.5 GB.
MEMORY_CAP = 1536 * 1024 * 1024


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def harness(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, HARNESS_CACHE_DIR=str(cwd / "cache"), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([PY, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout, preexec_fn=_cap_memory)


def refused(res: subprocess.CompletedProcess, *fragments: str) -> str:
    """The single error line of a refused input (exit 2), holding every fragment."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- HDF5 descriptor submissions ------------------------------------------------------------------------


@pytest.fixture
def disc21_gt(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\nQ0,R1\nQ1,\n")
    return gt


def _h5(path: Path, *, query=None, query_ids=None, reference_ids=None, **kw) -> Path:
    with h5py.File(path, "w") as f:
        if query is None:
            f.create_dataset("query", data=np.random.default_rng(0).random((2, 8), dtype=np.float32))
        else:
            query(f)
        f.create_dataset("reference", data=np.random.default_rng(1).random((3, 8), dtype=np.float32))
        (query_ids or (lambda f: f.create_dataset("query_ids", data=np.array([b"Q0", b"Q1"]))))(f)
        (reference_ids or (lambda f: f.create_dataset("reference_ids", data=np.array([b"R0", b"R1", b"R2"]))))(f)
    return path


def test_hdf5_dataset_declaring_gigabytes_it_does_not_store(tmp_path, disc21_gt):
    # 2M x 256 float64 = 4 GB declared; no chunk ever written: the file is a few KB
    sub = _h5(tmp_path / "sub.h5", query=lambda f: f.create_dataset(
        "query", shape=(2_000_000, 256), dtype="f8", chunks=(4096, 256), compression="gzip"))
    assert sub.stat().st_size < 100_000
    line = refused(harness("score", "disc21", str(sub), "--ground-truth", str(disc21_gt), cwd=tmp_path),
                   "sub.h5: query: declares 4,096,000,000 bytes of data but stores 0 on disk")
    assert "32x" in line


def test_hdf5_fixed_width_ids_as_wide_as_a_gigabyte(tmp_path, disc21_gt):
    sub = _h5(tmp_path / "sub.h5", query_ids=lambda f: f.create_dataset(
        "query_ids", shape=(2,), dtype="S1000000000", chunks=(1,), compression="gzip"))
    refused(harness("score", "disc21", str(sub), "--ground-truth", str(disc21_gt), cwd=tmp_path),
            "query_ids: ids are 1,000,000,000 bytes wide, over the limit of 256")


def _vlen_sharing_one_string(path: Path, n: int, size: int) -> Path:
    """reference_ids: n variable-length strings whose on-disk references all point at one string of
    ``size`` bytes (a crafted file: h5py never writes this, but HDF5 reads it)."""
    ids = np.array([b"R" * size] + [b"R%d" % i for i in range(1, n)], dtype=object)
    with h5py.File(path, "w") as f:
        f.create_dataset("query", data=np.zeros((2, 8), np.float32))
        f.create_dataset("reference", data=np.zeros((n, 8), np.float32))
        f.create_dataset("query_ids", data=np.array([b"Q0", b"Q1"]))
        ds = f.create_dataset("reference_ids", data=ids, dtype=h5py.string_dtype("ascii"))
        offset, stored = ds.id.get_offset(), ds.id.get_storage_size()
    width = stored // n
    with open(path, "r+b") as fh:
        fh.seek(offset)
        first = fh.read(width)
        fh.seek(offset)
        fh.write(first * n)
    with h5py.File(path) as f:  # HDF5 indeed reads every element as the big string
        assert len(f["reference_ids"][n - 1]) == size
    return path


def test_hdf5_variable_length_ids_all_pointing_at_one_huge_string(tmp_path, disc21_gt):
    # 20,000 references to one 1 MB string: 20 GB once read, from a 1.3 MB file
    sub = _vlen_sharing_one_string(tmp_path / "sub.h5", 20_000, 1_000_000)
    refused(harness("score", "disc21", str(sub), "--ground-truth", str(disc21_gt), cwd=tmp_path),
            "reference_ids[0]: id of 1,000,000 bytes, over the limit of 256")


def test_hdf5_variable_length_ids_referring_to_more_than_the_file(tmp_path):
    from harness_plugins.disc21.files import read_descriptor_h5

    sub = _vlen_sharing_one_string(tmp_path / "sub.h5", 50_000, 250)  # 12.5 MB of ids from a 2 MB file
    with pytest.raises(SubmissionError, match="refer to more string data than the file holds"):
        read_descriptor_h5(sub)


def test_hdf5_ids_with_an_embedded_nul_are_refused(tmp_path):
    from harness_plugins.disc21.files import read_descriptor_h5

    sub = _h5(tmp_path / "sub.h5", query_ids=lambda f: f.create_dataset("query_ids", data=np.array([b"Q0", b"Q\x001"])))
    with pytest.raises(SubmissionError, match=r"query_ids\[1\]: id 'Q\\x001' is not printable ASCII"):
        read_descriptor_h5(sub)


def test_hdf5_honest_files_still_read_in_every_layout(tmp_path):
    from harness_plugins.disc21.files import read_descriptor_h5

    vlen = h5py.string_dtype("ascii")
    layouts = {
        "fixed": lambda f: f.create_dataset("query_ids", data=np.array([b"Q0", b"Q1"])),
        "vlen": lambda f: f.create_dataset("query_ids", data=np.array(["Q0", "Q1"], dtype=object), dtype=vlen),
        "vlen-chunked": lambda f: f.create_dataset("query_ids", data=np.array(["Q0", "Q1"], dtype=object),
                                                   dtype=vlen, chunks=(1,)),
        "fixed-gzip": lambda f: f.create_dataset("query_ids", data=np.array([b"Q0", b"Q1"]), chunks=(1,),
                                                 compression="gzip"),
    }
    for name, make in layouts.items():
        out = read_descriptor_h5(_h5(tmp_path / f"{name}.h5", query_ids=make))
        assert out["query_ids"].tolist() == ["Q0", "Q1"], name
    compressed = _h5(tmp_path / "float-gzip.h5", query=lambda f: f.create_dataset(
        "query", data=np.random.default_rng(0).random((50, 8)), chunks=(10, 8), compression="gzip"),
        query_ids=lambda f: f.create_dataset("query_ids", data=np.array([b"Q%d" % i for i in range(50)])))
    x = read_descriptor_h5(compressed)["query"]
    assert x.dtype == np.float32 and x.shape == (50, 8)
    with pytest.raises(SubmissionError, match="stored contiguously or in unfiltered chunks"):
        read_descriptor_h5(_h5(tmp_path / "vlen-gzip.h5", query_ids=lambda f: f.create_dataset(
            "query_ids", data=np.array(["Q0", "Q1"], dtype=object), dtype=vlen, chunks=(1,), compression="gzip")))


# -- .npy rankings -----------------------------------------------------------------------------------


def _gnd(n_db: int = 4, n_q: int = 2) -> dict:
    return {"imlist": [f"im{i}" for i in range(n_db)], "qimlist": [f"q{i}" for i in range(n_q)],
            "gnd": [{"easy": [0], "hard": [1], "junk": [], "bbx": [0, 0, 1, 1]} for _ in range(n_q)]}


def test_npy_header_declaring_a_huge_shape(tmp_path):
    gt = tmp_path / "gnd_roxford5k.pkl"
    gt.write_bytes(pickle.dumps(_gnd(n_q=70), protocol=4))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": (10**8, 70)})
    sub = tmp_path / "ranks.npy"
    sub.write_bytes(buf.getvalue() + bytes(8 * 70 * 4))  # 56 GB declared, 2 KB held
    refused(harness("score", "roxford5k", str(sub), "--ground-truth", str(gt), cwd=tmp_path),
            "ranks.npy: header declares shape (100000000, 70) (56,000,000,000 bytes of int64) but the file holds "
            "2,240 bytes of data")


# -- pickles (revisitop ground truth) ---------------------------------------------------------------


def _ranks(tmp_path: Path, n_q: int, n_db: int = 4) -> Path:
    sub = tmp_path / "ranks.npy"
    np.save(sub, np.tile(np.arange(n_db)[:, None], (1, n_q)))
    return sub


def test_gnd_pickle_whose_queries_share_one_big_entry(tmp_path):
    # 100,000 queries all referencing one entry of 3 x 5,000 ids: 1.5e9 ids to validate, from 1 MB
    n_db, n_q = 5000, 100_000
    entry = {"easy": list(range(n_db)), "hard": list(range(n_db)), "junk": list(range(n_db)), "bbx": [0, 0, 1, 1]}
    data = {"imlist": [f"im{i}" for i in range(n_db)], "qimlist": ["q"] * n_q, "gnd": [entry] * n_q}
    gt = tmp_path / "gnd_roxford5k.pkl"
    gt.write_bytes(pickle.dumps(data, protocol=4))
    assert gt.stat().st_size < 2_000_000
    refused(harness("score", "roxford5k", str(_ranks(tmp_path, n_q, n_db=4)), "--ground-truth", str(gt),
                    cwd=tmp_path, timeout=60),
            "gnd_roxford5k.pkl: expands to more than", "once shared references are followed")


def _tuple_hash_bomb(levels: int = 60) -> bytes:
    """``{t: 1}`` where t = (t', t'), t' = (t'', t'') ... : hashing t walks 2**levels tuples."""
    out = [b"\x80\x02", b"K\x00\x85", b"q\x00"]  # BININT1 0, TUPLE1, BINPUT 0
    for i in range(1, levels + 1):
        out.append(b"h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"\x86" + b"q" + bytes([i]))  # (t, t)
    out.append(b"}h" + bytes([levels]) + b"K\x01s.")  # EMPTY_DICT, key, value 1, SETITEM, STOP
    return b"".join(out)


def _shared_bytearray_copies(copies: int, size: int) -> bytes:
    """``[bytearray(B)] * copies`` built as ``copies`` separate constructor calls on one shared B."""
    out = [b"\x80\x02", b"B" + struct.pack("<I", size) + b"x" * size, b"q\x00",
           b"c__builtin__\nbytearray\n", b"q\x01", b"](", (b"h\x01h\x00\x85R") * copies, b"e."]
    return b"".join(out)


@pytest.mark.parametrize("name, payload, reason", [
    ("tuple-hash", lambda: _tuple_hash_bomb(), "builds far more than its size"),
    ("bytearray-copies", lambda: _shared_bytearray_copies(50_000, 1_000_000), "builds far more than its size"),
    ("bytearray-n", lambda: b"\x80\x02c__builtin__\nbytearray\n" + pickle.dumps(10**10, 2)[2:-1] + b"\x85R.",
     "bytearray() is allowed on bytes, a list of ints or a latin-1 string only"),
    ("nested-lists", lambda: pickle.dumps(_gnd_with_easy([_nested_shared_list(40)]), protocol=4),
     "expands to more than"),
])
def test_pickles_that_expand_are_refused_in_bounded_time_and_memory(tmp_path, name, payload, reason):
    gt = tmp_path / f"gnd_{name}.pkl"
    gt.write_bytes(payload())
    assert gt.stat().st_size < 60 * 1024 * 1024
    refused(harness("score", "roxford5k", str(_ranks(tmp_path, 2)), "--ground-truth", str(gt), cwd=tmp_path,
                    timeout=60), reason)


def _gnd_with_easy(easy: list) -> dict:
    data = _gnd()
    data["gnd"][0]["easy"] = easy  # an invalid index: its repr would be in the message
    return data


def _nested_shared_list(levels: int) -> list:
    x: list = [0]
    for _ in range(levels):
        x = [x] * 10
    return x


def test_protocol_2_and_protocol_4_pickles_of_the_same_plain_values_read_the_same():
    from harness.safe_pickle import loads_plain

    import collections

    values = {"bytes": b"ab\xff\x00", "empty": b"", "bytearray": bytearray(b"x\x00"), "set": {1, 2},
              "frozenset": frozenset({"a"}), "complex": 1 + 2j, "ordered": collections.OrderedDict(a=1),
              "big": 10**30, "float": 1.5, "tuple": (1, (2,)), "none": None, "list": [True, "é"]}
    read = {p: loads_plain(pickle.dumps(values, protocol=p)) for p in range(6)}
    for p in range(6):
        assert read[p] == values, p
        assert {k: type(v) for k, v in read[p].items()} == {k: type(v) for k, v in values.items()}, p


def test_gnd_written_with_protocol_2_scores_like_protocol_4(tmp_path):
    from harness_plugins.revisitop.files import read_revisitop_gnd

    data = _gnd()
    data["gnd"][0]["junk"] = (2,)  # tuples too
    paths = {}
    for p in (2, 4):
        paths[p] = tmp_path / f"gnd_p{p}.pkl"
        paths[p].write_bytes(pickle.dumps(data, protocol=p))
    assert read_revisitop_gnd(paths[2]) == read_revisitop_gnd(paths[4])
    data["gnd"][1]["easy"] = {3}  # a set where a list belongs: the same message for both protocols
    messages = set()
    for p in (2, 4):
        paths[p].write_bytes(pickle.dumps(data, protocol=p))
        with pytest.raises(SubmissionError) as info:
            read_revisitop_gnd(paths[p])
        messages.add(str(info.value).replace(f"gnd_p{p}", "gnd"))
    assert len(messages) == 1 and "gnd[1].easy: missing or not a list" in messages.pop()


def test_a_huge_value_in_a_ground_truth_is_not_rendered_in_full(tmp_path):
    import json

    data = _gnd()
    data["gnd"][0]["easy"] = ["x" * 1_000_000]
    gt = tmp_path / "gnd_roxford5k.json"
    gt.write_text(json.dumps(data))
    line = refused(harness("score", "roxford5k", str(_ranks(tmp_path, 2)), "--ground-truth", str(gt), cwd=tmp_path),
                   "gnd[0].easy[0]: 'xxxx", "is not an index into imlist")
    assert len(line) < 300


def test_huge_integers_in_a_bbx_are_a_clean_error(tmp_path):
    from harness_plugins.revisitop.files import validate_revisitop_gnd

    data = _gnd()
    data["gnd"][0]["bbx"] = [0, 0, 10**400, 1]
    with pytest.raises(SubmissionError, match=r"gnd\[0\]\.bbx: expected 4 finite numbers"):
        validate_revisitop_gnd(data)


# -- specs --------------------------------------------------------------------------------------------

SPEC = "task: t\ndataset: {name: disc21, root: /nowhere}\ndescriptor: {name: gist}\nindex: {name: faiss}\nmetrics: [{name: disc21}]\n"


def _laughs(levels: int = 12) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines)


def test_yaml_aliases_that_expand_exponentially(tmp_path):
    spec = tmp_path / "laughs.yaml"
    spec.write_text(SPEC.replace("dataset: {name: disc21, root: /nowhere}",
                                 "dataset:\n  name: demo\n  transform:\n" + textwrap.indent(_laughs(), "    ")))
    refused(harness("validate", str(spec), cwd=tmp_path, timeout=30),
            "laughs.yaml:", "YAML document has more than 100,000 values once aliases are expanded")
    good = tmp_path / "good.yaml"
    good.write_text(SPEC)
    laughs = "{" + _laughs().replace("\n", ", ") + "}"
    refused(harness("validate", str(good), "--set", f"description={laughs}", cwd=tmp_path, timeout=30),
            "--set description: YAML document has more than 100,000 values")


def test_yaml_nested_thousands_deep(tmp_path):
    spec = tmp_path / "deep.yaml"
    spec.write_text(SPEC + "description: " + "[" * 20_000 + "]" * 20_000 + "\n")
    refused(harness("validate", str(spec), cwd=tmp_path, timeout=30), "deep.yaml:6: YAML nested more than 64 levels")
    good = tmp_path / "good.yaml"
    good.write_text(SPEC)
    refused(harness("validate", str(good), "--set", "seed=" + "{a: " * 5000 + "1" + "}" * 5000,
                    cwd=tmp_path, timeout=30), "--set seed: YAML nested more than 64 levels")


def test_spec_files_that_are_huge_or_not_regular_files(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text(SPEC + "description: '" + "x" * 3_000_000 + "'\n")
    refused(harness("validate", str(huge), cwd=tmp_path), "huge.yaml: spec file is 3,000,", "over the 1,048,576-byte limit")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    refused(harness("validate", str(fifo), cwd=tmp_path, timeout=30), "fifo.yaml: not a regular file")
    refused(harness("run", "/dev/zero", cwd=tmp_path, timeout=30), "/dev/zero: not a regular file")


def test_a_spec_that_is_not_a_mapping_says_so_even_with_set(tmp_path):
    from harness.spec import load_spec

    spec = tmp_path / "list.yaml"
    spec.write_text("- task: t\n- seed: 1\n")
    for overrides in ([], ["seed=2"], ["descriptor={name: gist}", "task=x"]):
        with pytest.raises(UserError) as info:
            load_spec(spec, overrides)
        assert str(info.value) == f"{spec}:1: a spec must be a mapping of keys (task, dataset, ...), got list", overrides
    empty = tmp_path / "empty.yaml"  # an empty file is an empty mapping: --set may fill it
    empty.write_text("")
    with pytest.raises(UserError, match="missing required key 'dataset'"):
        load_spec(empty, ["task=t"])


# -- parameters that ask for absurd memory -------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_plugins_site(tmp_path_factory):
    from plugin_site import site_distributions, toy_site

    return toy_site(tmp_path_factory.mktemp("site"))


@pytest.mark.parametrize("override, expected", [
    ("descriptor={name: random, dim: 10000000000}",
     "error: random: descriptors of 10,000,000,000 dimensions, over the limit of 1,048,576"),
    ("descriptor={name: phash, hash_size: 100000}",
     "error: phash: descriptors of 10,000,000,000 dimensions, over the limit of 1,048,576"),
    ("descriptor={name: gist, size: 100000, grid: 4}",
     "error: gist: size 100000 with 4 x 8 filters and batch_size 8 needs"),
    ("descriptor={name: color_histogram, size: 1000000}", "error: color_histogram: size 1000000 (a batch of 32 images) needs"),
    ("index={name: faiss, search: {k: 1000000000000}}", "error: index faiss: search.k = 1,000,000,000,000 for 6 queries needs"),
    ("extraction={batch_size: 1000000000}", "extraction.batch_size: expected an integer from 1 to 65,536, got 1000000000"),
    ("extraction={workers: 100000}", "extraction.workers: expected an integer from 0 to 256, got 100000"),
    # within this machine's memory but not within the process's (capped): the allocation fails cleanly
    ("index={name: faiss, search: {k: 100000000}}", "error: out of memory: Unable to allocate"),
])
def test_parameters_that_ask_for_absurd_memory(toy_plugins_site, tmp_path, override, expected):
    from plugin_site import TESTS, site_distributions

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"task: t\ndataset: {{name: toy, root: {tmp_path / 'data'}}}\ndescriptor: {{name: random, dim: 8}}\n"
                    "index: {name: brute}\nmetrics: [{name: recall_at}]\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(toy_plugins_site), str(TESTS), os.environ.get("PYTHONPATH", "")]),
               HARNESS_LOAD_PLUGINS=",".join(site_distributions(toy_plugins_site)),
               HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run([PY, "-m", "harness", "run", str(spec), "-q", "--no-cache", "--set", override, "--output",
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
                         preexec_fn=_cap_memory)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_an_image_that_is_a_fifo_or_a_device_is_one_line_not_a_hang(tmp_path):
    """Datasets that list their images (revisitop's imlist) open whatever path a name gives."""
    fifo = tmp_path / "im.jpg"
    os.mkfifo(fifo)  # nobody will ever write to it: a plain open() would block forever
    code = textwrap.dedent(f"""
        from harness.errors import UserError
        from harness.parts import Item
        for path in ({str(fifo)!r}, "/dev/zero", {str(tmp_path)!r}):
            try:
                Item("x", path).load()
            except UserError as exc:
                print(exc)
    """)
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=_cap_memory)
    assert res.stdout.splitlines() == [
        f"{fifo}: not a regular file (a FIFO, device or socket), expected an image file",
        "/dev/zero: not a regular file (a FIFO, device or socket), expected an image file",
        f"{tmp_path}: a directory, expected an image file",
    ], res.stderr
