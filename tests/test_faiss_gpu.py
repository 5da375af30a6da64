"""Where exact faiss searches run (plugins/faiss/gpu.py), tested on the CPU: the selection logic
against faiss modules with and without GPU support, and the GPU code path itself with a stand-in
``GpuIndexFlat`` built on the CPU's exact ``IndexFlat`` (so its answers must equal the CPU path's)."""

from __future__ import annotations

import types

import faiss
import numpy as np
import pytest

import harness_plugins.faiss.gpu as gpu
from harness.errors import UserError
from harness_plugins.faiss.index import FaissIndex
from harness_plugins.faiss.search import global_top_k, knn_search


def fake_faiss(gpus: int | None) -> types.SimpleNamespace:
    """A faiss stand-in: ``None`` = a CPU-only build (no GPU symbols), else a GPU build seeing ``gpus``."""
    if gpus is None:
        return types.SimpleNamespace(get_num_gpus=lambda: 0)  # faiss-cpu has get_num_gpus too
    return types.SimpleNamespace(StandardGpuResources=object, get_num_gpus=lambda: gpus)


@pytest.mark.parametrize(("gpus", "device", "expected"), [
    (None, "auto", "cpu"), (0, "auto", "cpu"), (1, "auto", "gpu"), (4, "auto", "gpu"),
    (None, "cpu", "cpu"), (2, "cpu", "cpu"), (1, "gpu", "gpu"),
])
def test_device_selection(gpus, device, expected):
    assert gpu.resolve(device, fake_faiss(gpus)) == expected


@pytest.mark.parametrize(("gpus", "reason"), [(None, "no GPU support (install faiss-gpu)"), (0, "faiss sees no GPU")])
def test_gpu_without_one_is_one_clear_error(gpus, reason):
    with pytest.raises(UserError, match=rf"device 'gpu' asked for, but .*{reason.split(' (')[0]}"):
        gpu.resolve("gpu", fake_faiss(gpus))


def test_a_failing_gpu_count_means_no_gpu():
    def broken() -> int:
        raise RuntimeError("CUDA driver version is insufficient")

    assert gpu.gpu_count(types.SimpleNamespace(StandardGpuResources=object, get_num_gpus=broken)) == 0


def test_the_installed_cpu_faiss_selects_the_cpu():
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible to this faiss")
    assert gpu.resolve("auto") == "cpu"
    index = FaissIndex("Flat", device="gpu")
    index.add(np.zeros((2, 4), np.float32))
    with pytest.raises(UserError, match="device 'gpu'"):
        index.search(np.zeros((1, 4), np.float32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"device": "cuda"}, "device must be one of auto, cpu, gpu, got 'cuda'"),
    ({"factory": "IVF4,Flat", "device": "gpu"}, "device 'gpu' applies to factory Flat"),
    ({"search": {"range": 1.0}, "device": "gpu"}, "range search runs on the CPU"),
])
def test_device_parameter_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        FaissIndex(**kwargs)


class FakeGpuFlat:
    """``GpuIndexFlatL2/IP(resources, d)`` on the CPU: exact, and records what it was asked."""

    calls: list[tuple[int, int]] = []  # (queries, k) of every search
    built = 0

    def __init__(self, res, d, metric):
        assert isinstance(res, FakeResources)
        self._index = faiss.IndexFlat(d, metric)
        FakeGpuFlat.built += 1

    def add(self, x):
        self._index.add(x)

    def search(self, x, k):
        assert k <= gpu.GPU_MAX_K, "the GPU path must never ask for more than faiss GPU's k limit"
        FakeGpuFlat.calls.append((len(x), k))
        return self._index.search(x, k)


class FakeResources:
    pass


@pytest.fixture
def fake_gpu(monkeypatch):
    """faiss as a GPU build with one GPU, whose GpuIndexFlat is the CPU's exact IndexFlat."""
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeResources, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "GpuIndexFlatL2", lambda res, d: FakeGpuFlat(res, d, faiss.METRIC_L2), raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", lambda res, d: FakeGpuFlat(res, d, faiss.METRIC_INNER_PRODUCT),
                        raising=False)
    monkeypatch.setattr(gpu, "_resources", {})
    FakeGpuFlat.calls, FakeGpuFlat.built = [], 0
    return FakeGpuFlat


def data(nq=40, nb=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, (nq, d)).astype(np.float32), rng.integers(0, 3, (nb, d)).astype(np.float32)  # many ties


def as_tuple(n):
    q, r, s = n.as_pairs()
    return q.tolist(), r.tolist(), s.tolist()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_auto_runs_exact_search_on_the_gpu_with_the_cpu_answers(fake_gpu, metric):
    xq, xb = data()
    cpu_top = global_top_k(xq, xb, 500, metric=metric, block_size=64)
    cpu_knn = knn_search(xq, xb, 7, metric=metric, block_size=64)
    assert fake_gpu.built == 0  # the functions default to the CPU
    index = FaissIndex("Flat", metric=metric, search={"global_top_k": 500}, block_size=64)
    index.add(xb)
    got = index.search(xq)
    assert fake_gpu.built == 5 and fake_gpu.calls  # one GPU index per database block, searched there
    assert as_tuple(got) == as_tuple(cpu_top)
    fake_gpu.built = 0
    knn = FaissIndex("Flat", metric=metric, search={"k": 7}, block_size=64, device="gpu")
    knn.add(xb)
    got = knn.search(xq)
    assert fake_gpu.built == 5
    assert np.array_equal(got.indices, cpu_knn.indices) and np.array_equal(got.scores, cpu_knn.scores)


def test_device_cpu_never_touches_the_gpu(fake_gpu):
    xq, xb = data()
    index = FaissIndex("Flat", search={"global_top_k": 200}, device="cpu")
    index.add(xb)
    expected = global_top_k(xq, xb, 200)
    assert as_tuple(index.search(xq)) == as_tuple(expected)
    assert fake_gpu.built == 0 and not fake_gpu.calls


def test_requests_beyond_the_gpu_k_limit_go_to_the_cpu(fake_gpu, monkeypatch):
    """Saturated queries are searched 4x deeper; past GPU_MAX_K that call runs on the CPU, same answer."""
    monkeypatch.setattr(gpu, "GPU_MAX_K", 40)
    xq, xb = data(nq=60, nb=400)
    xq[0] = xb[0]  # queries with many close references go deep
    xq[1] = xb[1]
    expected = global_top_k(xq, xb, 600, block_size=200)
    cpu_calls = []
    real_knn = faiss.knn
    monkeypatch.setattr(faiss, "knn", lambda *a, **kw: cpu_calls.append(a[2]) or real_knn(*a, **kw))
    got = global_top_k(xq, xb, 600, block_size=200, device="auto")
    assert as_tuple(got) == as_tuple(expected)
    assert fake_gpu.calls and cpu_calls and min(cpu_calls) > 40


def test_the_disc21_scorer_searches_on_the_gpu_when_there_is_one(fake_gpu, tmp_path):
    import h5py

    from harness_plugins.disc21.scorer import Disc21Scorer

    xq, xb = data(nq=6, nb=50, seed=3)
    xq[:3] = xb[[4, 9, 20]] + 0.1
    with h5py.File(tmp_path / "sub.h5", "w") as f:
        f["query"], f["reference"] = xq, xb
        f["query_ids"] = np.array([f"Q{i:05d}".encode() for i in range(6)])
        f["reference_ids"] = np.array([f"R{i:06d}".encode() for i in range(50)])
    (tmp_path / "gt.csv").write_text("query_id,reference_id\nQ00000,R000004\nQ00001,R000009\nQ00002,R000020\n"
                                     "Q00003,\nQ00004,\nQ00005,\n")
    on_gpu = Disc21Scorer().score(str(tmp_path / "sub.h5"), str(tmp_path / "gt.csv"))
    assert fake_gpu.calls
    with pytest.MonkeyPatch.context() as m:
        m.setattr(faiss, "get_num_gpus", lambda: 0)
        on_cpu = Disc21Scorer().score(str(tmp_path / "sub.h5"), str(tmp_path / "gt.csv"))
    assert on_gpu == on_cpu and on_cpu["micro_ap"] == 1.0
