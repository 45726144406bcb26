"""End-to-end tests of `jaxgrad study` (in-process via main(argv), plus one subprocess)."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxgrad
from jaxgrad import cli
from jaxgrad._src import problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, problems.DEFAULT_DATA)


def _strict_json(path):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    with open(path) as fh:
        return json.load(fh, parse_constant=reject)


def run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def check_outputs(out_dir, stdout, estimators, num_keys):
    """Exit 0 already checked; the table, CSVs, JSON and PNG are there and well-formed."""
    assert "f-evals" in stdout and "us/est" in stdout
    for name in estimators:
        assert f"\n{name} " in stdout
    assert f"plot: {os.path.join(out_dir, 'study.png')}" in stdout
    with open(os.path.join(out_dir, "study.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["estimator"] for r in rows] and sorted(r["estimator"] for r in rows) == sorted(
        estimators
    )
    for r in rows:
        assert int(r["num_keys"]) == num_keys
        assert float(r["total_variance"]) >= 0 and float(r["time_per_estimate_s"]) > 0
        assert int(r["f_evals"]) >= 1
    effs = [float(r["efficiency"]) for r in rows]
    assert effs == sorted(effs)  # sorted by efficiency
    doc = _strict_json(os.path.join(out_dir, "study.json"))
    assert doc["settings"]["num_keys"] == num_keys
    assert {"jax", "jaxlib", "jaxgrad", "python", "platform", "devices"} <= set(doc["versions"])
    assert doc["versions"]["jaxgrad"] == jaxgrad.__version__
    ncoord = len(doc["problem"]["coordinates"])
    for res in doc["results"]:
        assert len(res["coordinates"]["mean"]) == ncoord
        assert len(res["coordinates"]["variance"]) == ncoord
    with open(os.path.join(out_dir, "study_coordinates.csv"), newline="") as fh:
        assert len(list(csv.DictReader(fh))) == ncoord * len(estimators)
    from matplotlib.image import imread

    image = imread(os.path.join(out_dir, "study.png"))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 800
    return rows, doc


def test_study_bernoulli_toy_runs_every_applicable_estimator(tmp_path, capsys):
    out = str(tmp_path / "demo")
    rc, stdout, stderr = run(["study", "bernoulli-toy", "--num-keys", "3000", "--out", out], capsys)
    assert rc == 0, stderr
    names = [n for n, e in jaxgrad.ESTIMATORS.items() if e.applies_to("bernoulli")]
    rows, doc = check_outputs(out, stdout, names, 3000)
    assert doc["skipped"] == []
    assert doc["problem"]["exact"] == pytest.approx([0.025])
    by_name = {r["estimator"]: r for r in rows}
    # DisARM is exact at p = 1/2; REINFORCE's variance is 1.5939e-2 (REFERENCES.md).
    assert float(by_name["disarm"]["total_variance"]) < 1e-12
    assert float(by_name["reinforce"]["total_variance"]) == pytest.approx(1.5939e-2, rel=0.1)
    assert "[10/10]" in stderr or f"[{len(names)}/{len(names)}]" in stderr  # progress


@pytest.mark.parametrize(
    "problem, options, estimators",
    [
        ("categorical-toy", ["--dim", "2", "--classes", "3"], ["reinforce"]),
        ("gaussian", "--function cos --k 2 --loc 0.3".split(), ["pathwise", "measure-valued"]),
    ],
)
def test_study_other_problems(problem, options, estimators, tmp_path, capsys):
    out = str(tmp_path / "o")
    options = [*options, "--estimators", ",".join(estimators), "--out", out, "--quiet"]
    rc, stdout, stderr = run(
        ["study", problem, *"--num-keys 4000 --batch-size 512 --seed 3".split(), *options], capsys
    )
    assert rc == 0, stderr
    assert stderr == ""  # --quiet
    rows, doc = check_outputs(out, stdout, estimators, 4000)
    for r in rows:  # all these are unbiased: |bias| within 5 standard errors
        res = next(x for x in doc["results"] if x["estimator"] == r["estimator"])
        c = res["coordinates"]
        assert np.all(np.abs(c["bias"]) <= 5 * np.asarray(c["stderr"]) + 1e-6)
        assert res["batch_size"] == 512


@pytest.mark.skipif(not os.path.exists(DATA), reason=f"binarized MNIST not found at {DATA}")
def test_study_binary_vae(tmp_path, capsys):
    out = str(tmp_path / "vae")
    argv = "study binary-vae --latent 8 --images 2 --train-steps 0 --estimators disarm"
    argv = [*argv.split(), "--num-keys", "300", "--data", DATA, "--out", out]
    rc, stdout, stderr = run(argv, capsys)
    assert rc == 0, stderr
    rows, doc = check_outputs(out, stdout, ["disarm"], 300)
    assert len(doc["problem"]["coordinates"]) == 16  # 2 images x 8 latent bits
    assert doc["problem"]["exact"] is None
    assert doc["problem"]["settings"]["latent"] == 8
    assert np.all(np.isfinite(doc["results"][0]["coordinates"]["variance"]))


def _bad_npz(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "text":
        path.write_text("not an npz file\n")
    elif kind == "no-train":
        np.savez(path, test=np.zeros((4, 98), np.uint8))
    elif kind == "shape":
        np.savez(path, train=np.zeros((4, 784), np.uint8))
    elif kind == "dtype":
        np.savez(path, train=np.zeros((4, 98), np.float32))
    elif kind == "few":
        np.savez(path, train=np.zeros((2, 98), np.uint8))
    return str(path)


ERRORS = [
    (["study", "nope"], "unknown problem 'nope'"),
    (["study", "bernoulli-toy", "--estimators", "nope"], "unknown estimator 'nope'"),
    (
        ["study", "gaussian", "--estimators", "disarm"],
        "estimator 'disarm' does not apply to normal variables",
    ),
    (["study", "bernoulli-toy", "--k", "2"], "option --k does not apply to problem"),
    (["study", "bernoulli-toy", "--p", "1.5"], "--p must lie strictly between 0 and 1"),
    (["study", "bernoulli-toy", "--num-keys", "1"], "--num-keys must be at least 2"),
    (["study", "bernoulli-toy", "--num-keys", "many"], "invalid int value"),
    (["study", "gaussian", "--function", "sin"], "invalid choice"),
    (
        ["study", "bernoulli-toy", "--estimators", "rloo", "--num-samples", "1"],
        "needs --num-samples >= 2",
    ),
    (["study", "binary-vae"], "binary-vae needs the data set: --data PATH"),
    (["study", "binary-vae", "--data", "/nonexistent/mnist.npz"], "does not exist"),
    ([], "required: COMMAND"),
]


@pytest.mark.parametrize("argv, message", ERRORS)
def test_errors_exit_nonzero_with_one_line(argv, message, tmp_path, capsys):
    rc, stdout, stderr = run([*argv, "--out", str(tmp_path)] if argv else argv, capsys)
    assert rc == 2
    assert message in stderr
    assert stderr.startswith("jaxgrad: error: ") and stderr.count("\n") == 1
    assert "Traceback" not in stderr + stdout


@pytest.mark.parametrize(
    "kind, message",
    [
        ("text", "cannot read"),
        ("no-train", "has no array 'train'"),
        ("shape", "has dtype uint8 and shape (4, 784)"),
        ("dtype", "has dtype float32"),
        ("few", "fewer than --images 4"),
    ],
)
def test_malformed_data_file(kind, message, tmp_path, capsys):
    path = _bad_npz(tmp_path, kind)
    rc, _, stderr = run(["study", "binary-vae", "--data", path, "--out", str(tmp_path)], capsys)
    assert rc == 2 and message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_output_folder_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    argv = ["study", "bernoulli-toy", "--estimators", "disarm", "--num-keys", "10", "--quiet"]
    rc, _, stderr = run([*argv, "--out", str(path)], capsys)
    assert rc == 2 and "cannot create output folder" in stderr and stderr.count("\n") == 1


def test_subprocess_error_has_no_traceback():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxgrad", "study", "bernoulli-toy", "--estimators", "pathwise"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("jaxgrad: error: estimator 'pathwise' does not apply")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_missing_matplotlib_still_writes_tables(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = str(tmp_path / "nomp")
    rc, stdout, stderr = run(
        [
            "study",
            "bernoulli-toy",
            "--estimators",
            "disarm",
            "--num-keys",
            "100",
            "--out",
            out,
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0
    assert "matplotlib is not installed" in stderr and "pip install" in stderr
    assert os.path.exists(os.path.join(out, "study.json"))
    assert not os.path.exists(os.path.join(out, "study.png")) and "plot:" not in stdout


def test_list(capsys):
    rc, stdout, _ = run(["list"], capsys)
    assert rc == 0
    for name in [*problems.PROBLEMS, *jaxgrad.ESTIMATORS]:
        assert name in stdout


def test_progress_bar_redraws_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = cli._Progress(2, stream)
    bar.start(1, "disarm")
    bar.update(50, 100)
    bar.update(100, 100)
    bar.finish(None, "done")
    text = stream.getvalue()
    assert "\r[ 1/2] disarm" in text and "100%" in text and text.endswith("done\n")
