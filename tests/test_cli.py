"""End-to-end tests of `jaxgrad study` (in-process via main(argv), plus one subprocess)."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxgrad
from jaxgrad import cli
from jaxgrad._src import problems
from jaxgrad._src import study as study_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, problems.DEFAULT_DATA)


def _strict_json(path):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    with open(path) as fh:
        return json.load(fh, parse_constant=reject)


def run(argv, capsys):
    # In-process studies keep JAX's persistent cache off: the worker's later compiles must
    # not go to disk (tests of the cache run the command in fresh processes).
    if argv[:1] == ["study"] and "--cache-dir" not in argv and "--no-cache" not in argv:
        argv = [*argv, "--no-cache"]
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
    # RELAX is tuned first (untuned, it would be REBAR): the table and the JSON say so.
    tuning = doc["settings"]["tuning"]
    assert set(tuning) == {"relax", "rodeo", "double-cv"}
    assert all(t["steps"] == 200 and t["keys_per_step"] == 16 for t in tuning.values())
    relax = next(r for r in doc["results"] if r["estimator"] == "relax")
    assert "200 variance_loss steps" in relax["note"]
    assert "relax: tuned: 200 variance_loss steps" in stdout
    assert by_name["relax"]["total_variance"] != by_name["rebar"]["total_variance"]
    for res in doc["results"]:  # tuned on keys of their own, so still unbiased
        if res["estimator"] in tuning:
            c = res["coordinates"]
            assert np.all(np.abs(c["bias"]) <= 5 * np.asarray(c["stderr"]) + 1e-9)
    assert "reference: the exact gradient" in stdout
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
    argv = "study binary-vae --latent 8 --images 2 --train-steps 50"
    unbiased = ["rloo", "rodeo", "double-cv"]
    names = [*unbiased, "straight-through"]
    argv = [*argv.split(), "--estimators", ",".join(names), "--num-keys", "2000"]
    rc, stdout, stderr = run([*argv, "--data", DATA, "--out", out], capsys)
    assert rc == 0, stderr
    rows, doc = check_outputs(out, stdout, names, 2000)
    assert len(doc["problem"]["coordinates"]) == 16  # 2 images x 8 latent bits
    assert doc["problem"]["exact"] is None
    assert doc["problem"]["settings"]["latent"] == 8
    # No exact gradient: bias and MSE against the unbiased estimators, and it says so.
    assert doc["reference"]["kind"] == "pooled"
    assert sorted(doc["reference"]["estimators"]) == sorted(unbiased)
    assert "reference: no exact gradient; the inverse-variance weighted mean" in stdout
    for res in doc["results"]:
        assert res["bias_against"] == "pooled" and res["bias_norm"] is not None
        assert np.all(np.isfinite(res["coordinates"]["variance"]))
        assert res["efficiency"] == pytest.approx(res["total_mse"] * res["f_evals"])
    # The published ordering at 2 f-evaluations: tuned RODEO and double CV below RLOO
    # (measured 3.0 and 0.39 against 21.4; untuned RODEO is RLOO).
    var = {r["estimator"]: float(r["total_variance"]) for r in rows}
    f_evals = {r["estimator"]: int(r["f_evals"]) for r in rows}
    assert f_evals["rodeo"] == f_evals["double-cv"] == f_evals["rloo"] == 2
    assert var["rodeo"] < 0.5 * var["rloo"] and var["double-cv"] < 0.5 * var["rloo"]
    assert set(doc["settings"]["tuning"]) == {"rodeo", "double-cv"}


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
    elif kind in ("crc", "truncated"):
        np.savez(path, train=np.zeros((64, 98), np.uint8))
        data = bytearray(path.read_bytes())
        if kind == "crc":  # a corrupt member: its bytes no longer match the CRC
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 2]
        path.write_bytes(bytes(data))
    elif kind == "object":  # a member of pickled objects
        np.savez(path, train=np.array([{"a": 1}], dtype=object))
    elif kind == "pickle":  # not a zip at all, but a pickle
        import pickle

        path.write_bytes(pickle.dumps({"train": 1}))
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
    (["study", "binary-vae", "--data", "/nonexistent/mnist.npz"], "does not exist"),
    ([], "required: COMMAND"),
    (["study", "gaussian", "--loc", "nan"], "argument --loc: must be a finite number, got 'nan'"),
    (["study", "bernoulli-toy", "--target", "inf"], "argument --target: must be a finite number"),
    (["study", "gaussian", "--scale=-inf"], "argument --scale: must be a finite number"),
    (["study", "bernoulli-toy", "--p", "0.2,nan"], "argument --p: must be a finite number"),
    (["study", "bernoulli-toy", "--seed", str(2**63)], "--seed must fit in 64 bits"),
    (["study", "bernoulli-toy", "--seed", str(-(2**63) - 1)], "--seed must fit in 64 bits"),
    (["study", "bernoulli-toy", "--logit", "40"], "the coin never flips"),
    (["study", "bernoulli-toy", "--logit=-1000"], "the coin never flips"),
    (["study", "bernoulli-toy", "--logit", "-2,-1000"], "the coin never flips"),
    (["study", "gaussian", "--scale", "-inf"], "argument --scale: must be a finite number"),
    (["study", "bernoulli-toy", "--p", "0.3,1e-9"], "the coin never flips"),
    (["study", "bernoulli-toy", "--estimators", ","], "--estimators names no estimator (got ',')"),
    (["study", "bernoulli-toy", "--num-keys", str(2**32)], "--num-keys must be below 2**32"),
    (["study", "bernoulli-toy", "--temperature", "0"], "argument --temperature: must be positive"),
    (["study", "bernoulli-toy", "--temperature", "nan"], "must be a finite number"),
    (["study", "gaussian", "--temperature", "0.5"], "--temperature applies to none"),
    (
        ["study", "bernoulli-toy", "--estimators", "disarm", "--temperature", "0.5"],
        "--temperature applies to none of the estimators",
    ),
    (["study", "bernoulli-toy", "--tune-steps", "-1"], "--tune-steps must be at least 0"),
]


def test_negative_numbers_are_values_with_or_without_an_equals_sign():
    """``--logit -2,0.5`` means ``--logit=-2,0.5`` (argparse alone reads it as an option)."""
    for argv in (["--logit", "-2,0.5"], ["--logit=-2,0.5"]):
        ns = cli._parser().parse_args(cli._join_negative_values(["study", "bernoulli-toy", *argv]))
        assert ns.logit == (-2.0, 0.5)
    ns = cli._parser().parse_args(
        cli._join_negative_values(["study", "gaussian", "--k", "-1e-3", "--loc", "-.5"])
    )
    assert (ns.k, ns.loc) == (-1e-3, -0.5)
    words = ["--estimators", "-x", "--p", "0.1"]
    assert cli._join_negative_values(words) == words  # only numbers are glued


def test_binary_vae_default_data_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    """No --data: $JAXGRAD_DATA (a file or its folder), else ../shared/data beside the repo."""
    monkeypatch.setenv(problems.DATA_ENV, str(tmp_path))
    assert problems.default_data_path() == str(tmp_path / "binarized_mnist.npz")
    rc, _, err = run(["study", "binary-vae", "--num-keys", "8"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "binary-vae needs the data set: none at the default" in err
    assert problems.DATA_ENV in err and str(tmp_path) in err
    monkeypatch.delenv(problems.DATA_ENV)
    assert problems.default_data_path() == os.path.normpath(DATA)


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
        ("crc", "is corrupt or truncated (BadZipFile"),
        ("truncated", "cannot read"),
        ("object", "holds pickled Python objects"),
        ("pickle", "holds pickled Python objects"),
    ],
)
def test_malformed_data_file(kind, message, tmp_path, capsys):
    path = _bad_npz(tmp_path, kind)
    rc, _, stderr = run(["study", "binary-vae", "--data", path, "--out", str(tmp_path)], capsys)
    assert rc == 2 and message in stderr and path in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    # numpy's advice to load pickled data unsafely is never passed on
    assert "allow_pickle" not in stderr and "pickle.load" not in stderr and "trust" not in stderr


def _read_only_folder(tmp_path):
    """An existing folder nobody may write: chmod 555, or /sys for root (which ignores modes)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/sys"
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return str(path)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("file", "exists and is a file, not a folder"),
        ("devnull", "exists and is a device, not a folder"),
        ("read-only", "cannot write to output folder"),
        ("under-a-file", "is not a folder"),
        ("under-read-only", "is not writable"),
    ],
)
def test_bad_out_is_refused_before_any_work(kind, message, tmp_path, capsys, monkeypatch):
    """--out is checked first: a bad one costs nothing (the problem is never even built)."""
    (tmp_path / "file").write_text("keep me")
    path = {
        "file": str(tmp_path / "file"),
        "devnull": os.devnull,
        "read-only": _read_only_folder(tmp_path),
        "under-a-file": str(tmp_path / "file" / "sub"),
        "under-read-only": os.path.join(_read_only_folder(tmp_path), "new", "sub"),
    }[kind]

    def never(*args, **kwargs):
        raise AssertionError("the study started before --out was checked")

    monkeypatch.setattr(cli, "_build_problem", never)
    argv = ["study", "bernoulli-toy", "--estimators", "disarm", "--num-keys", "10", "--quiet"]
    rc, stdout, stderr = run([*argv, "--out", path], capsys)
    assert rc == 2, stderr
    assert stderr.startswith("jaxgrad: error: --out: ") and message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and stdout == ""
    assert (tmp_path / "file").read_text() == "keep me"


def test_subprocess_error_has_no_traceback(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXGRAD_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxgrad", "study", "bernoulli-toy", "--estimators", "pathwise"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
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
    for name in [*problems.PROBLEMS, *jaxgrad.ESTIMATORS, *jaxgrad.OBJECTIVES]:
        assert name in stdout


def test_progress_bar_redraws_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = cli._Progress(stream)
    bar.start(1, 2, "disarm")
    bar.update(50, 100)
    bar.update(100, 100)
    bar.finish(None, "done")
    text = stream.getvalue()
    assert "\r[ 1/2] disarm" in text and "100%" in text and text.endswith("done\n")


TINY = ["study", "bernoulli-toy", "--p", "0.2,0.7", "--num-keys", "64", "--quiet"]


def _leftovers(folder):
    """Temporary or probe files a write left behind."""
    return [n for n in os.listdir(folder) if n.startswith(".")]


@pytest.fixture
def fake_stats(monkeypatch):
    """grad_stats without compiling: fixed figures per estimator; records what it was given.

    For the tests of the CLI's own behaviour (files, partial results, flags),
    which do not need real estimates.
    """
    calls = []

    def fake(est, key, params, *args, num_keys, exact=None, f_evals=None, **kwargs):
        calls.append({"est": est, "key": key, "params": params, "args": args})
        k = len(calls)
        mean = np.asarray(params, np.float64) * 0 + 0.1 * k
        variance = np.full_like(mean, 0.01 * k)
        stderr = np.sqrt(variance / num_keys)
        ex = None if exact is None else np.asarray(exact, np.float64)
        bias = None if ex is None else mean - ex
        return jaxgrad.diagnostics.GradStats(
            num_keys=num_keys,
            mean=mean,
            variance=variance,
            stderr=stderr,
            snr=np.abs(mean) / np.sqrt(variance),
            exact=ex,
            bias=bias,
            mse=None if bias is None else variance + bias**2,
            f_evals=f_evals,
            time_per_estimate=1e-6,
            compile_time=0.0,
            batch_size=64,
            num_devices=1,
            bias_stderr=None if bias is None else stderr,
        )

    monkeypatch.setattr(study_module, "grad_stats", fake)
    return calls


def test_rerun_replaces_every_output_and_no_plot_removes_the_stale_png(
    tmp_path, capsys, fake_stats
):
    out = str(tmp_path / "o")
    rc, stdout, _ = run([*TINY, "--estimators", "disarm,reinforce", "--out", out], capsys)
    assert rc == 0 and os.path.exists(os.path.join(out, "study.png"))
    assert "replaced" not in stdout
    rc, stdout, _ = run([*TINY, "--estimators", "reinforce", "--no-plot", "--out", out], capsys)
    assert rc == 0
    assert f"replaced the earlier study in {out}" in stdout
    assert sorted(os.listdir(out)) == ["study.csv", "study.json", "study_coordinates.csv"]
    doc = _strict_json(os.path.join(out, "study.json"))
    with open(os.path.join(out, "study.csv"), newline="") as fh:
        assert [r["estimator"] for r in csv.DictReader(fh)] == ["reinforce"]
    assert [r["estimator"] for r in doc["results"]] == ["reinforce"]
    assert doc["partial"] is False and "--no-plot" in doc["settings"]["argv"]


@pytest.mark.parametrize(
    "error, status, line",
    [
        (KeyboardInterrupt(), 130, "jaxgrad: interrupted; wrote the 1 finished estimator(s) to"),
        (
            RuntimeError("device out of memory\nsecond line"),
            1,
            "jaxgrad: error: RuntimeError in reinforce: device out of memory; wrote the 1",
        ),
        (ValueError("bad shape"), 2, "jaxgrad: error: ValueError in reinforce: bad shape; wrote"),
    ],
)
def test_interrupt_or_error_writes_the_finished_estimators_marked_partial(
    error, status, line, tmp_path, capsys, monkeypatch, fake_stats
):
    real = study_module.grad_stats
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second estimator: reinforce
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "grad_stats", flaky)
    out = str(tmp_path / "o")
    argv = [*TINY, "--estimators", "disarm,reinforce,arm", "--out", out]
    rc, stdout, stderr = run(argv, capsys)
    assert rc == status
    assert stderr.startswith(line) and stderr.rstrip().endswith("marked partial")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stdout.startswith("PARTIAL STUDY: stopped by ")
    assert "not finished: reinforce, arm" in stdout.splitlines()[0]
    doc = _strict_json(os.path.join(out, "study.json"))
    assert doc["partial"] is True and doc["settings"]["partial"] is True
    assert doc["not_finished"] == ["reinforce", "arm"]
    assert [r["estimator"] for r in doc["results"]] == ["disarm"]
    assert "reinforce" in doc["interruption"]
    assert os.path.exists(os.path.join(out, "study.png")) and _leftovers(out) == []


def test_interrupt_before_any_estimator_finished_writes_nothing(tmp_path, capsys, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "grad_stats", stop)
    out = tmp_path / "o"
    rc, stdout, stderr = run([*TINY, "--estimators", "disarm", "--out", str(out)], capsys)
    assert rc == 130
    assert stderr == "jaxgrad: interrupted; no estimator had finished, nothing written\n"
    assert not out.exists()


def test_write_failure_after_the_study_falls_back_to_a_temporary_folder(
    tmp_path, capsys, monkeypatch, fake_stats
):
    out = str(tmp_path / "o")
    real = cli.write_outputs

    def failing_once(study, folder, argv, plot=True):
        if folder == out:
            raise OSError(28, "No space left on device")
        return real(study, folder, argv, plot=plot)

    monkeypatch.setattr(cli, "write_outputs", failing_once)
    rc, stdout, stderr = run([*TINY, "--estimators", "disarm", "--out", out], capsys)
    assert rc == 1 and stderr.count("\n") == 1
    assert "No space left on device" in stderr and "wrote the study to" in stderr
    elsewhere = stderr.rstrip().split("wrote the study to ")[1].removesuffix(" instead")
    doc = _strict_json(os.path.join(elsewhere, "study.json"))
    assert doc["results"][0]["estimator"] == "disarm"


def test_temperature_reaches_every_entry_that_has_one(tmp_path, capsys, fake_stats):
    out = str(tmp_path / "o")
    argv = [*TINY, "--estimators", "relaxed-bernoulli,rebar,disarm", "--no-plot"]
    rc, stdout, _ = run([*argv, "--temperature", "0.3", "--tune-steps", "0", "--out", out], capsys)
    assert rc == 0
    # The estimator the study ran is the registry's at temperature 0.3, not at its default.
    call = fake_stats[0]
    problem = problems.bernoulli_toy(p=(0.2, 0.7))
    info = jaxgrad.ESTIMATORS["relaxed-bernoulli"]

    def grad(est):
        return np.asarray(jax.grad(est, argnums=1)(jax.random.clone(call["key"]), call["params"]))

    cold = info.build(problem.f, dist=problem.dist, num_samples=1, temperature=0.3)
    warm = info.build(problem.f, dist=problem.dist, num_samples=1)
    np.testing.assert_array_equal(grad(call["est"]), grad(cold))
    assert not np.array_equal(grad(call["est"]), grad(warm))
    doc = _strict_json(os.path.join(out, "study.json"))
    assert doc["settings"]["temperature"] == 0.3
    assert doc["settings"]["temperatures"] == {"relaxed-bernoulli": 0.3, "rebar": 0.3}
    by = {r["estimator"]: r for r in doc["results"]}
    assert by["disarm"]["temperature"] is None and by["rebar"]["temperature"] == 0.3
    assert "temperature (given): 0.3 (" in stdout


def test_cpu_device_count_honours_both_environment_variables():
    count = cli._cpu_device_count
    assert count({}, 6) == 6
    assert count({}, None) == 1
    assert count({"JAX_NUM_CPU_DEVICES": "3"}, 6) is None  # JAX reads it itself
    flags = "--xla_cpu_foo=1 --xla_force_host_platform_device_count=5"
    assert count({"XLA_FLAGS": flags}, 6) == 5
    assert count({"XLA_FLAGS": flags, "JAX_NUM_CPU_DEVICES": "2"}, 6) is None


def test_subprocess_honours_xla_flags_device_count():
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=3")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxgrad", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "devices: 3 x cpu" in proc.stdout


def test_the_cli_is_a_thin_face_over_diagnostics_study(tmp_path, capsys, monkeypatch, fake_stats):
    """One implementation: the CLI's study is diagnostics.study, its table and files too."""
    calls = []
    real = cli.diagnostics.study

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cli.diagnostics, "study", spy)
    rc, _, _ = run([*TINY, "--estimators", "disarm", "--no-plot", "--out", str(tmp_path)], capsys)
    assert rc == 0 and len(calls) == 1 and calls[0]["name"] == "bernoulli-toy"
    assert cli.format_table is jaxgrad.diagnostics.format_table
    assert cli.Study is jaxgrad.diagnostics.Study


def _study_process(tmp_path, *flags):
    env = {k: v for k, v in os.environ.items() if k != "JAXGRAD_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    argv = [*TINY[:-1], "--estimators", "disarm", "--no-plot", "--out", str(tmp_path / "out")]
    return subprocess.run(
        [sys.executable, "-m", "jaxgrad", *argv, *flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


def _compilation_line(stderr):
    (line,) = [x for x in stderr.splitlines() if x.startswith("compilation: ")]
    return line


def test_a_second_run_loads_every_program_from_the_compilation_cache(tmp_path):
    """The persistent cache: the first run compiles and stores, the second compiles nothing.

    The default folder is $XDG_CACHE_HOME/jaxgrad/xla; the counts come from JAX's
    own monitoring events (jaxgrad._src.compile_cache.CompileCounter).
    """
    first = _study_process(tmp_path)
    assert first.returncode == 0, first.stderr
    line = _compilation_line(first.stderr)
    built = int(re.match(r"compilation: (\d+) program\(s\) built", line).group(1))
    assert built >= 1 and "loaded" not in line, line
    folder = tmp_path / "xdg" / "jaxgrad" / "xla"
    assert folder.is_dir() and any(folder.iterdir())

    second = _study_process(tmp_path)
    assert second.returncode == 0, second.stderr
    line = _compilation_line(second.stderr)
    assert f"{built} program(s) built" in line and f"{built} of them loaded" in line, line
    assert first.stdout.splitlines()[:3] == second.stdout.splitlines()[:3]  # the same study


def test_no_cache_and_unusable_cache_dirs(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, _, err = run([*TINY, "--cache-dir", str(blocker / "sub"), "--out", str(tmp_path)], capsys)
    assert rc == 2 and err.startswith("jaxgrad: error: --cache-dir ") and err.count("\n") == 1
    assert "not a writable folder" in err
    rc, _, err = run([*TINY, "--cache-dir", str(tmp_path), "--no-cache"], capsys)
    assert rc == 2 and "contradict" in err and err.count("\n") == 1


def test_an_unusable_default_cache_warns_and_the_study_runs(
    tmp_path, capsys, monkeypatch, fake_stats
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(cli.compile_cache, "default_dir", lambda: str(blocker / "xla"))
    enabled = []
    monkeypatch.setattr(cli.compile_cache, "enable", enabled.append)
    argv = [*TINY, "--estimators", "disarm", "--no-plot", "--out", str(tmp_path / "out")]
    rc, _, err = run([*argv, "--cache-dir", str(tmp_path / "ok")], capsys)
    assert rc == 0 and enabled == [str(tmp_path / "ok")]
    rc = cli.main(argv)  # no flag: the default folder, which cannot be written
    _, err = capsys.readouterr()
    assert rc == 0 and enabled == [str(tmp_path / "ok")]
    assert err.startswith("jaxgrad: warning: no compilation cache: cannot write to ")
    assert "--no-cache" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--coordinator", "localhost:1234"], "--coordinator needs --distributed."),
        (["--distributed", "--num-processes", "2", "--process-id", "2"], "--process-id must be"),
        (["--distributed", "--num-processes", "0"], "--num-processes must be at least 1"),
        (["--distributed", "--coordinator", "localhost"], "--coordinator must be HOST:PORT"),
    ],
)
def test_distributed_flags_are_checked_before_joining(flags, message, tmp_path, capsys):
    rc, _, err = run([*TINY, "--out", str(tmp_path), *flags], capsys)
    assert rc == 2 and err.startswith(f"jaxgrad: error: {message}") and err.count("\n") == 1
