"""The converter of SIMAT's pickled heads: refuses code, rebuilds tensors exactly, never imports torch.nn code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from harness.errors import SubmissionError
from harness_plugins.simat.convert_heads import convert, main, read_torch_archive


def test_real_shaped_heads_convert_exactly(tmp_path):
    import torch
    from safetensors.numpy import load_file

    torch.manual_seed(0)
    heads = {"img_head": torch.nn.Linear(512, 512), "txt_head": torch.nn.Linear(512, 512)}
    src = tmp_path / "head_clip_t=0.1.pt"
    torch.save(heads, src)
    shapes = convert(src, tmp_path / "heads.safetensors")
    assert shapes == {"img_head.weight": (512, 512), "img_head.bias": (512,),
                      "txt_head.weight": (512, 512), "txt_head.bias": (512,)}
    out = load_file(str(tmp_path / "heads.safetensors"))
    for side, layer in heads.items():
        assert np.array_equal(out[f"{side}.weight"], layer.weight.detach().numpy())
        assert np.array_equal(out[f"{side}.bias"], layer.bias.detach().numpy())


def test_bare_tensor_views_and_dtypes(tmp_path):
    import torch
    from safetensors.numpy import load_file

    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {"view": base.t()[1:4], "half": torch.ones(3, dtype=torch.float16) / 3,
           "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16), "ints": torch.arange(5)}
    torch.save(obj, tmp_path / "mixed.pt")
    convert(tmp_path / "mixed.pt", tmp_path / "mixed.safetensors")
    out = load_file(str(tmp_path / "mixed.safetensors"))
    assert np.array_equal(out["view"], base.t()[1:4].numpy())
    assert out["half"].dtype == np.float16 and np.array_equal(out["half"], obj["half"].numpy())
    assert out["bf16"].tolist() == [1.5, -2.25]
    assert out["ints"].tolist() == [0, 1, 2, 3, 4]
    oracle = torch.rand(7, 5)
    torch.save(oracle, tmp_path / "oscar_similarity_matrix.pt")
    assert convert(tmp_path / "oscar_similarity_matrix.pt", tmp_path / "o.safetensors", name="oscar") == {"oscar": (7, 5)}
    assert np.array_equal(load_file(str(tmp_path / "o.safetensors"))["oscar"], oracle.numpy())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _archive_with(pkl: bytes, path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")


def test_code_executing_pickle_is_refused_and_nothing_runs(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    # a real torch.save archive whose object graph carries an os.system call next to real heads
    torch.save({"img_head": torch.nn.Linear(4, 4), "evil": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(SubmissionError, match=r"refusing to build (posix|os)\.system"):
        read_torch_archive(tmp_path / "evil.pt")
    assert not marker.exists()
    for module, name in (("builtins", "eval"), ("torch.nn.modules.container", "Sequential"), ("subprocess", "Popen")):
        _archive_with(b"c" + f"{module}\n{name}\n".encode() + b"(S'1'\ntR.", tmp_path / "g.pt")
        with pytest.raises(SubmissionError, match=f"refusing to build {module}.{name}"):
            read_torch_archive(tmp_path / "g.pt")
    # the CLI: one line, exit code 2, no output file
    r = subprocess.run([sys.executable, "-m", "harness_plugins.simat.convert_heads", str(tmp_path / "evil.pt"),
                        str(tmp_path / "out.safetensors")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert not (tmp_path / "out.safetensors").exists() and not marker.exists()


def test_corrupt_archives(tmp_path):
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(SubmissionError, match="legacy"):
        read_torch_archive(tmp_path / "legacy.pt")
    # a tensor whose geometry reads past its storage
    # hand-written protocol-2 pickle: _rebuild_tensor_v2(storage 0 (4 floats), offset 2, size (3,), stride (1,))
    pkl = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
           b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x02K\x03\x85K\x01\x85\x89)tR.")
    with zipfile.ZipFile(tmp_path / "oob.pt", "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    with pytest.raises(SubmissionError, match="reads past its storage"):
        read_torch_archive(tmp_path / "oob.pt")
    with zipfile.ZipFile(tmp_path / "short.pt", "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", b"\x00" * 8)
    with pytest.raises(SubmissionError, match="8 bytes for 4 elements"):
        read_torch_archive(tmp_path / "short.pt")
    assert main([str(tmp_path / "short.pt"), str(tmp_path / "x.safetensors")]) == 2
    # stride 0: a 4-element storage posing as a billion elements
    huge = pkl.replace(b"K\x02K\x03\x85K\x01\x85", b"K\x00J\x00\xca\x9a;\x85K\x00\x85")
    with zipfile.ZipFile(tmp_path / "huge.pt", "w") as z:
        z.writestr("archive/data.pkl", huge)
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    with pytest.raises(SubmissionError, match="more elements than its storage"):
        read_torch_archive(tmp_path / "huge.pt")
    # the same pickle with a valid geometry converts
    ok = pkl.replace(b"K\x02K\x03\x85", b"K\x01K\x03\x85")
    with zipfile.ZipFile(tmp_path / "ok.pt", "w") as z:
        z.writestr("archive/data.pkl", ok)
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    assert read_torch_archive(tmp_path / "ok.pt").tolist() == [1.0, 2.0, 3.0]


def test_reader_never_imports_torch(tmp_path):
    import torch

    torch.save({"img_head": torch.nn.Linear(3, 2)}, tmp_path / "h.pt")
    code = ("import sys; from harness_plugins.simat.convert_heads import convert; "
            f"convert({str(tmp_path / 'h.pt')!r}, {str(tmp_path / 'h.safetensors')!r}); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
