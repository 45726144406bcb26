"""Executes every notebook (jupytext percent scripts in notebooks/) end to end.

Each runs in a fresh interpreter, as a reader would run it, so that the
notebooks cannot rot: a notebook that raises fails the suite. The suite runs
them at their reduced size (``JAXGRAD_NOTEBOOK_QUICK=1``); ``python
notebooks/NAME.py`` runs the full size. There is no wall-clock limit: a busy
machine makes a notebook slower, not wrong.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from jaxgrad._src import problems

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.py"))


def _run(path, tmp_path, **env):
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu", JAXGRAD_NOTEBOOK_QUICK="1", **env)
    # The notebooks run real computations, which are slow at the suite's level 0 (binary_vae
    # takes twice as long), but their quick runs are mostly compiles, which are slow at XLA's
    # default level 2. Level 1 is the best of both: CPU seconds of the quick runs at levels
    # 1 and 2, binary_vae 15 and 21, gaussian_vae 11 and 21, samplers_tour 8 and 12.
    flags = env.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if "xla_backend_optimization_level" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, "--xla_backend_optimization_level=1"])
    return subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    data = problems.default_data_path()
    proc = _run(path, tmp_path, JAXGRAD_DATA=data)
    tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{path.name} failed:\n{tail}"
    if path.stem == "gaussian_vae":  # its figures, in the working directory, named on stdout
        for png in ("gaussian_vae_curves.png", "gaussian_vae_samples.png"):
            assert (tmp_path / png).stat().st_size > 0 and f"saved {png}" in proc.stdout
    if path.stem in ("binary_vae", "gaussian_vae"):
        if os.path.exists(data):  # the data is beside the clone: the notebook must have used it
            assert f"binarized MNIST from {data}" in proc.stdout, proc.stdout[-2000:]
            assert "SYNTHETIC" not in proc.stdout
        else:
            pytest.skip(f"ran on the synthetic fallback: {data} is absent")


def test_binary_vae_notebook_is_loud_without_data(tmp_path):
    """A missing data set is announced on stderr and stdout, never a silent fallback."""
    path = NOTEBOOKS[[p.stem for p in NOTEBOOKS].index("binary_vae")]
    missing = str(tmp_path / "no-such.npz")
    # Only the data section matters: stop right after it by running the cells up to it.
    source = path.read_text().split("# %% [markdown]\n# ## The model and the ELBO")[0]
    script = tmp_path / "data_section.py"
    script.write_text(source)
    proc = _run(script, tmp_path, JAXGRAD_DATA=missing)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "NOT FOUND" in proc.stderr and missing in proc.stderr
    assert f"SYNTHETIC DATA: {missing} not found" in proc.stdout


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no jupytext scripts"
