"""What users install: the wheel's contents, the import name beside Hugging Face's ``kernels``.

transformers >= 5.25 depends on Hugging Face's ``kernels`` distribution, whose import name
was also this package's until the rename to ``bert_embedding_kernels`` (issue 28). These
tests keep the two apart: the wheel holds one top-level package, ``bert_embedding_kernels``,
with its data files; a process imports both packages and transformers and uses each; a
checkout on ``sys.path`` (Python started in the repository root) never hides Hugging Face's
``kernels``; and when ``make test`` runs the suite (EXPECT_INSTALLED_WHEEL=1), what it
imports is the installed wheel, not the checkout.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import bert_embedding_kernels as bek

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOT = ROOT / "kernels"  # the src layout's root: it must never be a package itself
HF_KERNELS = importlib.util.find_spec("kernels") is not None


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONPATH", None)  # the interpreter's own sys.path, as a user's
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from this checkout, as `make` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("src")
    # Build from a copy of the package's sources: setuptools writes build/ and
    # *.egg-info/ into the tree it builds, which must not touch the checkout.
    for name in ("pyproject.toml", "README.md"):
        (build / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(
        ["cp", "-r", str(ROOT / "kernels"), str(build / "kernels")], check=True, timeout=60
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(build)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("bert_embedding_kernels-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_holds_one_package_and_its_data(wheel):
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"bert_embedding_kernels"}, tops
    assert "bert_embedding_kernels/calibration.json" in names
    data = [name for name in names if name.startswith("bert_embedding_kernels/bench/engine/data/")]
    shipped = sorted(
        p.name for p in (ROOT / "kernels/bert_embedding_kernels/bench/engine/data").iterdir()
    )
    assert sorted(Path(name).name for name in data) == shipped and shipped
    # every module of the source tree is in it (a stale build/ would add removed ones)
    sources = {
        str(p.relative_to(ROOT / "kernels"))
        for p in (ROOT / "kernels").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert {name for name in names if name.endswith(".py")} == sources


def test_the_wheel_names_its_script_and_import_name(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "embench = bert_embedding_kernels.bench.cli:main" in text
    assert "kernels" not in text.replace("bert_embedding_kernels", "")


@pytest.mark.skipif(not os.environ.get("EXPECT_INSTALLED_WHEEL"), reason="make test sets it")
def test_the_suite_runs_the_installed_wheel():
    package = Path(bek.__file__).resolve()
    assert SOURCE_ROOT not in package.parents, f"the tests imported the checkout: {package}"
    assert "site-packages" in package.parts, package
    assert Path.cwd().resolve() != ROOT and ROOT not in Path.cwd().resolve().parents


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_the_checkout_never_shadows_hugging_faces_kernels(where, tmp_path):
    done = _run(
        """
        import importlib.util, json
        import bert_embedding_kernels
        spec = importlib.util.find_spec("kernels")
        print(json.dumps(None if spec is None else spec.origin))
        """,
        ROOT if where == "repository root" else tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    origin = json.loads(done.stdout.strip().splitlines()[-1])
    if HF_KERNELS:  # a regular package wins over the source root, a namespace portion at most
        assert origin is not None and SOURCE_ROOT not in Path(origin).resolve().parents, origin
        assert Path(origin).name == "__init__.py"
    else:  # nothing to hide; the source root is no package of its own (origin None)
        assert origin is None, origin


@pytest.mark.skipif(
    not HF_KERNELS and not os.environ.get("CI"), reason="needs transformers >= 5.25 installed"
)
@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_both_packages_and_transformers_work_in_one_process(where, tmp_path):
    """Each used, in one interpreter: HF's kernels, transformers (its BertModel on MiniLM,
    which imports HF's kernels itself) and the drop-in swapped into that model."""
    done = _run(
        """
        import numpy as np, torch, transformers
        import kernels
        import bert_embedding_kernels as bek
        from bert_embedding_kernels.bench.engine import realdata
        from bert_embedding_kernels.nn import BertEmbeddings

        # Hugging Face's kernels: its own types (what transformers imports from it)
        device = kernels.Device(
            type="cuda", properties=kernels.CUDAProperties(min_capability=75, max_capability=90)
        )
        assert device.type == "cuda" and hasattr(kernels, "kernelize"), kernels.__file__
        assert not hasattr(kernels, "embed"), "our package answered to the name kernels"

        model = transformers.BertModel.from_pretrained(
            str(realdata.minilm_path()), local_files_only=True
        ).eval()
        ids = torch.tensor([[101, 7592, 2088, 1010, 2129, 2024, 2017, 102]])
        types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
        with torch.no_grad():
            expected = model(input_ids=ids, token_type_ids=types).last_hidden_state
            model.embeddings = BertEmbeddings.from_hf(model.embeddings)
            got = model(input_ids=ids, token_type_ids=types).last_hidden_state
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()

        tables = bek.EmbeddingTables.from_torch(model.embeddings)
        y = bek.embed(tables, ids.numpy(), types.numpy(), layer_norm=True)
        assert y.shape == (1, 8, 384)
        print("ok", kernels.__file__)
        """,
        ROOT if where == "repository root" else tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")
    assert SOURCE_ROOT not in Path(done.stdout.split()[1]).resolve().parents
