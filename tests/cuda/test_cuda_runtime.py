"""Loading bert_embedding_kernels.cuda: lazy, the numpy shim, a clear error without CUDA,
the device tables."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

kc = pytest.importorskip("bert_embedding_kernels.cuda")


def run_python(code, **env):
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment
    )


def test_numpy_shim_restores_row_stack_only_where_missing():
    old = types.SimpleNamespace(vstack=np.vstack)
    assert kc._patch_numpy(old) is True
    assert old.row_stack is np.vstack
    own = object()
    current = types.SimpleNamespace(vstack=np.vstack, row_stack=own)
    assert kc._patch_numpy(current) is False
    assert current.row_stack is own


def test_a_warning_in_a_kernel_module_leaves_its_globals_the_same_size():
    # The simulator lists a module's globals on every device-function call, from
    # a thread per CUDA thread; a first warning from that module used to add its
    # registry meanwhile ("dictionary changed size during iteration", CI). A
    # fresh process: this one's modules may have warned already.
    code = (
        "import sys, bert_embedding_kernels.cuda as kc\n"
        "package = 'bert_embedding_kernels.cuda.'\n"
        "modules = [m for n, m in sys.modules.items() if n.startswith(package)]\n"
        "grown = []\n"
        "for module in modules:\n"
        "    before = set(vars(module))\n"
        "    exec('__import__(\"numpy\").float16(1e6)', vars(module))\n"  # overflow: a warning
        "    grown += [module.__name__] if set(vars(module)) != before else []\n"
        "print(len(modules), grown)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "overflow encountered" in result.stderr  # the warning was raised
    count, grown = result.stdout.split(" ", 1)
    assert int(count) >= 10
    assert grown.strip() == "[]"


def test_import_kernels_does_not_load_cuda():
    code = (
        "import sys, bert_embedding_kernels; "
        "print('bert_embedding_kernels.cuda' in sys.modules, 'numba.cuda' in sys.modules)"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_without_gpu_or_simulator_the_import_says_what_to_do():
    result = run_python("import bert_embedding_kernels.cuda", NUMBA_ENABLE_CUDASIM="0")
    if result.returncode == 0:
        pytest.skip("a GPU is present: the import succeeds")
    assert "ImportError: bert_embedding_kernels.cuda needs a CUDA GPU" in result.stderr
    assert "NUMBA_ENABLE_CUDASIM=1" in result.stderr


def test_device_tables_round_trip_through_embedding_tables():
    import bert_embedding_kernels as bek

    tables = bek.EmbeddingTables.random(vocab_size=20, hidden_size=5, max_positions=8, seed=3)
    device = kc.DeviceTables.from_tables(tables)
    assert (device.vocab_size, device.type_vocab_size, device.max_positions) == (20, 2, 8)
    assert (device.hidden_size, device.dtype) == (5, np.float32)
    back = device.to_host()
    for name in ("token", "segment", "position", "norm_weight", "norm_bias"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tables, name))
    assert back.norm_eps == tables.norm_eps


def test_device_tables_refuse_what_the_kernels_cannot_take():
    with pytest.raises(TypeError, match="token has dtype int64"):
        kc.DeviceTables(np.zeros((2, 3), np.int64), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D of one width"):
        kc.DeviceTables(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="together"):
        kc.DeviceTables(
            np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), norm_weight=np.ones(3)
        )
