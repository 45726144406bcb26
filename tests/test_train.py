"""``jaxgrad train``: smoke runs of both problems, bit-identical resume, vmapped seeds, errors."""

from __future__ import annotations

import csv
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import cli
from jaxgrad._src import problems, train, vae

DATA = problems.default_data_path()
needs_data = pytest.mark.skipif(
    not os.path.exists(DATA), reason=f"binarized MNIST not found at {DATA}"
)
pytestmark = [needs_data, pytest.mark.xdist_group("train")]

TINY = "--steps 6 --log-every 3 --seeds 2 --batch-size 4 --train-images 40 --test-images 4"


def run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _check_outputs(out, names, seeds, steps, log_every):
    with open(os.path.join(out, "train.json")) as fh:
        doc = json.load(fh)
    assert doc["partial"] is False and doc["not_run"] == []
    assert doc["settings"]["steps"] == steps and doc["settings"]["seeds"] == list(range(seeds))
    assert doc["versions"]["jax"] and doc["command"][:2] == ["jaxgrad", "train"]
    assert [r["estimator"] for r in doc["results"]] == names
    points = steps // log_every
    for r in doc["results"]:
        assert r["finished"] and r["steps_done"] == steps
        assert r["curves"]["steps"] == [log_every * (i + 1) for i in range(points)]
        elbo = np.asarray(r["curves"]["train_elbo"])
        var = np.asarray(r["curves"]["grad_variance"])
        assert elbo.shape == var.shape == (seeds, points)
        assert np.all(np.isfinite(elbo)) and np.all(elbo < 0) and np.all(var > 0)
        bound = np.asarray(r["test_bound_per_seed"])
        assert bound.shape == (seeds,) and np.all(np.isfinite(bound)) and np.all(bound < 0)
        assert r["ms_per_step"] > 0 and r["compile_s"] > 0 and r["f_evals"] >= 1
    with open(os.path.join(out, "train.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["estimator"] for r in rows] == names
    with open(os.path.join(out, "train_curves.csv")) as fh:
        curves = list(csv.DictReader(fh))
    assert len(curves) == len(names) * seeds * points
    with open(os.path.join(out, "train.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    return doc


def test_binary_vae_smoke_run_writes_well_formed_outputs(tmp_path, capsys):
    out = str(tmp_path / "b")
    names = ["relax", "straight-through"]
    argv = ["train", "binary-vae", "--data", DATA, "--model", "nonlinear", *TINY.split()]
    rc, stdout, stderr = run([*argv, "--estimators", ",".join(names), "--out", out], capsys)
    assert rc == 0, stderr
    doc = _check_outputs(out, names, 2, 6, 3)
    assert doc["settings"]["model"]["hidden"] == [200, 200]
    relax = next(r for r in doc["results"] if r["estimator"] == "relax")
    assert "tuned online by variance_loss" in relax["note"] and relax["f_evals"] == 3
    assert "784-200-200-200" in stdout and "IWAE-100" in stdout
    # The JSON holds the whole run: load_run gives back the table that was printed.
    loaded = train.load_run(os.path.join(out, "train.json"))
    table = train.format_table(loaded)
    assert table.splitlines()[3:] == stdout.split("\n\nwrote")[0].splitlines()[3:]
    assert "[ 2/2] straight-through" in stderr
    # Results written through temporary files are as readable as the umask allows.
    mask = os.umask(0)
    os.umask(mask)
    for name in ("train.json", "train.csv", "checkpoints/relax.npz"):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~mask, name


def test_categorical_vae_smoke_run_anneals_the_temperature(tmp_path, capsys):
    out = str(tmp_path / "c")
    names = ["rloo", "gumbel-softmax"]
    argv = ["train", "categorical-vae", "--data", DATA, "--shape", "4x3", *TINY.split()]
    argv += ["--temperature", "1.0", "--anneal-rate", "0.1", "--min-temperature", "0.7"]
    rc, stdout, stderr = run([*argv, "--estimators", *names, "--out", out, "--quiet"], capsys)
    assert rc == 0, stderr
    assert stderr == ""
    doc = _check_outputs(out, names, 2, 6, 3)
    assert doc["settings"]["model"]["latent_shape"] == [3, 4]
    gs = next(r for r in doc["results"] if r["estimator"] == "gumbel-softmax")
    assert "max(0.7, 1 exp(-0.1 step))" in gs["note"]


@pytest.mark.parametrize(
    "t0, rate, floor", [(1.0, 0.1, 0.7), (1.5, 0.0, 0.5), (0.3, 0.1, 0.5), (2.0, 0.0, 3.0)]
)
def test_the_temperature_schedule_is_the_floored_exponential(t0, rate, floor):
    # max(floor, t0 exp(-rate step)); at rate 0 it is the constant t0, also above the floor.
    model = vae.categorical(4, 3)
    config = _config(model, temperature=t0, anneal_rate=rate, min_temperature=floor)
    data = jnp.zeros((4, 784), jnp.uint8)
    (spec,) = train.resolve_estimators("categorical-vae", model, ["gumbel-softmax"], t0)
    trainer = train._Trainer(config, spec, data, data)
    got = [float(trainer.temperature(jnp.asarray(s))) for s in (0, 1, 3, 10)]
    want = [max(min(floor, t0), t0 * math.exp(-rate * s)) for s in (0, 1, 3, 10)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ------------------------------------------------------------ the training ELBO


def _exact_elbo(model, params, x):
    """The ELBO of each image of ``x`` by enumerating every latent value of a tiny model."""
    f = vae.cost(model)
    shape = model.latent_shape
    if model.variable == "bernoulli":
        grid = np.array(np.meshgrid(*[[0.0, 1.0]] * shape[0], indexing="ij"))
        values = jnp.asarray(grid.reshape(shape[0], -1).T, jnp.float32)
    else:
        idx = np.array(np.meshgrid(*[range(shape[1])] * shape[0], indexing="ij"))
        values = jax.nn.one_hot(idx.reshape(shape[0], -1).T, shape[1], dtype=jnp.float32)

    def one(xx):
        logits = vae.encode(model, params["encoder"], xx)
        log_q = jax.vmap(lambda z: vae.log_q(model, logits, z))(values)
        fz = jax.vmap(lambda z: f(z, *vae.cost_args(model, params, xx)))(values)
        return -(jnp.sum(jnp.exp(log_q) * fz) + vae.analytic_term(model, logits))

    return jax.vmap(one)(x)


@pytest.mark.parametrize("model", [vae.binary("nonlinear", latent=3), vae.categorical(3, 2)])
def test_the_training_elbo_is_an_unbiased_one_sample_estimate(model, images):
    """Each image's one-sample ELBO averages to its exact ELBO (z-test on 4000 draws); the
    same test rejects samples from a wrong law (the first logit of each variable + 0.5)."""
    x = images[0][:3].astype(jnp.float32)
    params = vae.init(model, jax.random.key(1), jnp.full((784,), 0.3))
    exact = np.asarray(_exact_elbo(model, params, x))
    keys = jax.random.split(jax.random.key(2), (2, 4000))

    def shifted(key):  # z from a q with another first logit, scored as if from q: biased
        logits = jax.vmap(lambda xx: vae.encode(model, params["encoder"], xx))(x)
        shift = jnp.where(jnp.arange(logits.shape[-1]) == 0, 0.5, 0.0).astype(logits.dtype)
        z = vae.sample(model, key, logits + shift, 1)[0]
        fz = jax.vmap(lambda zz, xx: vae.cost(model)(zz, *vae.cost_args(model, params, xx)))
        return -(fz(z, x) + jax.vmap(lambda l: vae.analytic_term(model, l))(logits))

    ours = (lambda k: vae.elbo_samples(model, params, k, x), True)
    for (fn, unbiased), ks in zip([ours, (shifted, False)], keys, strict=True):
        draws = np.asarray(jax.jit(jax.vmap(fn))(ks), np.float64)  # [4000, 3]
        z = (draws.mean(0) - exact) / (draws.std(0, ddof=1) / math.sqrt(len(draws)))
        assert (np.max(np.abs(z)) < 4.0) == unbiased, (z, unbiased)


# ------------------------------------------------------- resume and vmapped seeds


def _config(model, *, seeds=(0, 1), steps=8, **kw):
    base = dict(
        problem="binary-vae" if model.variable == "bernoulli" else "categorical-vae",
        model=model,
        steps=steps,
        seeds=seeds,
        batch_size=4,
        learning_rate=1e-3,
        log_every=2,
        test_images=4,
        temperature=None,
        anneal_rate=1e-4,
        min_temperature=0.5,
        data=DATA,
        train_images=40,
    )
    base.update(kw)
    return train.Config(**base)


@pytest.fixture(scope="module")
def images():
    data, test = train.load_data(DATA, 40, 4)
    return data, test


@pytest.fixture(scope="module")
def uninterrupted(images):
    model = vae.binary("linear")
    (spec,) = train.resolve_estimators("binary-vae", model, ["rloo"], None)
    return spec, train.train_estimator(_config(model), spec, *images)


def test_resuming_from_a_checkpoint_is_bit_identical(uninterrupted, images, tmp_path):
    spec, whole = uninterrupted
    ckpt = str(tmp_path / "rloo.npz")
    config = _config(vae.binary("linear"))
    with pytest.raises(KeyboardInterrupt) as info:
        train.train_estimator(
            config, spec, *images, checkpoint=ckpt, checkpoint_seconds=0, stop_after=4
        )
    part = info.value.partial_run
    assert not part.finished and list(part.steps) == [2, 4] and part.test_bound is None
    resumed = train.train_estimator(config, spec, *images, checkpoint=ckpt)
    assert resumed.finished and list(resumed.steps) == [2, 4, 6, 8]
    np.testing.assert_array_equal(resumed.train_elbo, whole.train_elbo)
    np.testing.assert_array_equal(resumed.grad_variance, whole.grad_variance)
    np.testing.assert_array_equal(resumed.test_bound, whole.test_bound)
    # Power: a run from other initial parameters does not match.
    assert not np.array_equal(whole.train_elbo[:, 0], whole.train_elbo[:, 1])


def test_a_checkpoint_of_other_settings_is_refused(uninterrupted, images, tmp_path):
    spec, _ = uninterrupted
    ckpt = str(tmp_path / "rloo.npz")
    with pytest.raises(KeyboardInterrupt):
        train.train_estimator(
            _config(vae.binary("linear")),
            spec,
            *images,
            checkpoint=ckpt,
            checkpoint_seconds=0,
            stop_after=2,
        )
    other = _config(vae.binary("linear"), learning_rate=3e-4)
    with pytest.raises(train.TrainError, match="belongs to a run with other settings"):
        train.train_estimator(other, spec, *images, checkpoint=ckpt)


def test_vmapped_seeds_equal_the_seeds_run_one_at_a_time(uninterrupted, images):
    spec, both = uninterrupted
    model = vae.binary("linear")
    for j, seed in enumerate((0, 1)):
        alone = train.train_estimator(_config(model, seeds=(seed,)), spec, *images)
        # Equal up to float rounding: a batched matmul may sum in another order.
        np.testing.assert_allclose(alone.train_elbo[:, 0], both.train_elbo[:, j], rtol=1e-5)
        np.testing.assert_allclose(alone.grad_variance[:, 0], both.grad_variance[:, j], rtol=1e-4)
        np.testing.assert_allclose(alone.test_bound[0], both.test_bound[j], rtol=1e-5)


def test_ctrl_c_keeps_the_finished_estimators_and_the_same_command_resumes(
    tmp_path, capsys, monkeypatch
):
    out = str(tmp_path / "i")
    argv = ["train", "binary-vae", "--data", DATA, *TINY.split(), "--out", out, "--no-plot"]
    argv += ["--estimators", "disarm,rloo"]
    real = train.train_estimator
    calls = []

    def second_is_interrupted(config, spec, *a, **kw):
        calls.append(spec.name)
        if spec.name == "rloo" and calls.count("rloo") == 1:
            kw = {**kw, "stop_after": 3, "checkpoint_seconds": 0}
        return real(config, spec, *a, **kw)

    monkeypatch.setattr(train, "train_estimator", second_is_interrupted)
    rc, stdout, stderr = run(argv, capsys)
    assert rc == 130
    assert "PARTIAL RUN" in stdout and "same command resumes" in stderr
    with open(os.path.join(out, "train.json")) as fh:
        doc = json.load(fh)
    assert doc["partial"] is True and doc["not_run"] == []
    by = {r["estimator"]: r for r in doc["results"]}
    assert by["disarm"]["finished"] and not by["rloo"]["finished"]
    assert by["rloo"]["steps_done"] == 3
    rc, stdout, stderr = run(argv, capsys)
    assert rc == 0, stderr
    with open(os.path.join(out, "train.json")) as fh:
        doc = json.load(fh)
    assert doc["partial"] is False
    assert [r["steps_done"] for r in doc["results"]] == [6, 6]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--estimators", "nope"], "unknown estimator 'nope'"),
        (["--estimators", "reinmax"], "'reinmax' does not apply to bernoulli latents"),
        (["--estimators", "exact"], "'exact' enumerates"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive finite number"),
        (["--train-images", "0"], "--train-images must be in [1, 50000]"),
        (["--out", "/dev/null"], "exists and is a device"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_any_work(extra, message, tmp_path, capsys):
    argv = ["train", "binary-vae", "--data", DATA, "--out", str(tmp_path / "o"), *extra]
    rc, stdout, stderr = run(argv, capsys)
    assert rc == 2 and stdout == ""
    assert stderr.startswith("jaxgrad: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o" / "checkpoints")


def test_bad_problem_options(tmp_path, capsys):
    argv = ["train", "categorical-vae", "--data", DATA, "--shape", "1x3", "--out", str(tmp_path)]
    rc, _, stderr = run(argv, capsys)
    assert rc == 2 and "--shape must be CxL" in stderr
    rc, _, stderr = run(["train", "binary-vae", "--data", "/nope.npz"], capsys)
    assert rc == 2 and "--data: '/nope.npz' does not exist" in stderr
