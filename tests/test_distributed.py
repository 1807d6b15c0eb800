"""The drop-in under torch.distributed's engines: DDP and FSDP2 (``fully_shard`` of the
embeddings and of the whole model), gloo, two CPU processes started here (issue 36).

After two SGD steps on half a batch each, the parameters must equal a one-process run on
the whole batch (within 1e-5: the two halves' gradients are averaged in another order) and
the same engine's run without the drop-in. FSDP2 frees and re-allocates the unsharded
parameters' storage (``storage.resize_``), so this also shows that the kernels' numpy
views leave the storage resizable.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from optional import require

torch = require("torch")
require("transformers")

import distributed_run as run  # noqa: E402  (needs torch)

TIMEOUT = 600  # seconds: a hang (a rank waiting forever on the other) fails, never blocks CI


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    script = Path(__file__).with_name("distributed_run.py")
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _one_process(tied: bool, drop_in: bool) -> dict:
    module = run.model(tied, drop_in)
    run.train(module)
    return run.full_state(module)


def _assert_close(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys(), what
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-5, msg=f"{what}: {name}")


@pytest.mark.parametrize(("engine", "tied"), run.RUNS, ids=[e for e, _ in run.RUNS])
def test_two_processes_train_as_one(results, engine, tied):
    expected = _one_process(tied, drop_in=False)
    _assert_close(_one_process(tied, drop_in=True), expected, "one process, drop-in")
    for variant in ("plain", "drop-in"):
        got = torch.load(results / f"{engine}-{variant}.pt")
        _assert_close(got, expected, f"{engine}, {variant}, against one process")


def test_the_kernels_leave_parameter_storage_resizable():
    module = run.model(tied=True, drop_in=True)
    run.train(module)
    for name, parameter in module.named_parameters():
        assert parameter.untyped_storage().resizable(), name
