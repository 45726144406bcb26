r"""Training discrete-latent VAEs with each estimator: ``jaxgrad train``.

One run trains :mod:`jaxgrad._src.vae` models on binarized MNIST with each
chosen estimator, several seeds at once (``vmap`` over seeds: one compiled
program steps every seed), and records what the papers plot:

* the training ELBO, from one exact sample per image and step (independent of
  the estimator's own samples, so relaxed and straight-through estimators are
  measured on the same footing as unbiased ones), averaged over each
  ``log_every`` steps;
* the variance of the encoder gradient, tracked as the DisARM paper does:
  exponential moving averages ``m_1, m_2`` of ``g`` and ``g^2`` (decay
  0.999, bias corrected), and ``mean_i (m_2 - m_1^2)_i`` over the encoder's
  parameters;
* at the end, the 100-sample IWAE bound on test images;
* wall time per step (compilation excluded, measured separately) and
  f-evaluations per image.

Every step of seed ``s`` draws its batch and noise from
``fold_in(key(s), step)``, so a run does not depend on how it is chunked, and
all estimators start from the same initial parameters for a given seed. Runs
are checkpointed (an atomic ``.npz`` per estimator, every ``log_every`` steps
when at least ``checkpoint_seconds`` have passed, and at the end): an
interrupted run resumes from its last checkpoint, bit for bit, and a finished
estimator is never trained again.

Estimators with adaptable parameters (RELAX's control variate, RODEO's
``h``, double CV's ``alpha``; :mod:`jaxgrad._src.tuning`) are tuned online:
each step also takes an Adam step on ``theta`` against
``sum_i g_i(theta)^2``, the squared norm of the encoder gradient (double
backprop, Grathwohl et al. 2018), which leaves them unbiased.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import vae
from jaxgrad._src.tuning import per_leaf_adam, tunable

Array = jax.Array
EMA_DECAY = 0.999
IWAE_SAMPLES = 100
#: Part of every checkpoint's fingerprint: raised whenever the same settings would give other
#: bits (2: the training ELBO's noise is one draw per batch), so an old checkpoint is refused.
CHECKPOINT_FORMAT = 2

#: The estimators a problem trains with by default: name -> num_samples (None: registry's).
#: Binary: every registry estimator at 2 f-evaluations per image, UGC, REBAR and RELAX at
#: their own cost (3), straight-through and the relaxed Bernoulli as biased references.
BINARY_ESTIMATORS = {
    "rloo": 2,
    "arm": 1,
    "disarm": 1,
    "arms": 2,
    "ugc": 1,
    "double-cv": 2,
    "rodeo": 2,
    "reinforce-optimal": 2,
    "rebar": 1,
    "relax": 1,
    "straight-through": 1,
    "relaxed-bernoulli": 1,
}
CATEGORICAL_ESTIMATORS = {
    "gumbel-softmax": 1,
    "st-gumbel-softmax": 1,
    "straight-through-categorical": 1,
    "reinmax": 1,
    "gumbel-rao": 1,
    "rloo": 2,
    "indecater": 1,
    "unordered-set": 2,
}


#: The categorical VAE's relaxations start at this temperature and anneal to the floor.
CATEGORICAL_INITIAL_TEMPERATURE = 1.0


class TrainError(ValueError):
    """A training run that cannot start as asked (one line, names the argument)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings of a training run (everything that determines its numbers).

    Attributes:
      problem: ``"binary-vae"`` or ``"categorical-vae"``.
      model: the :class:`jaxgrad._src.vae.Model`.
      steps: training steps per estimator and seed.
      seeds: the seeds, trained at once (``vmap``).
      batch_size: images per step.
      learning_rate: Adam's learning rate for the model.
      log_every: steps per logged point (and per compiled chunk).
      test_images: test images the final IWAE bound averages over.
      temperature: the initial temperature of the relaxed estimators
        (categorical: annealed ``max(min_temperature, t0 exp(-r step))``,
        ``None``: from 1; binary: fixed, ``None``: each registry default).
      anneal_rate: ``r`` above (categorical only).
      min_temperature: the floor of the annealing (categorical only).
      data: the path of the binarized MNIST ``.npz``.
      train_images: training images used (the first ones of the split).
    """

    problem: str
    model: vae.Model
    steps: int
    seeds: tuple[int, ...]
    batch_size: int
    learning_rate: float
    log_every: int
    test_images: int
    temperature: float | None
    anneal_rate: float
    min_temperature: float
    data: str
    train_images: int

    def record(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = dataclasses.asdict(self.model)
        d["model"]["description"] = self.model.describe()
        d["seeds"] = list(self.seeds)
        d["ema_decay"] = EMA_DECAY
        d["iwae_samples"] = IWAE_SAMPLES
        d["optimizer"] = "adam"
        return d


@dataclasses.dataclass(frozen=True)
class EstimatorRun:
    """One estimator's training, all seeds.

    Attributes:
      name: the registry name.
      num_samples: its samples per image.
      f_evals: evaluations of the decoder per image and step (registry cost).
      steps: the logged steps (the end of each ``log_every`` window), ``[P]``.
      train_elbo: the mean training ELBO over each window, ``[P, S]``.
      grad_variance: the encoder-gradient variance at each logged step, ``[P, S]``.
      test_bound: the final 100-sample IWAE bound on the test images, ``[S]``
        (``None`` if the run stopped before the end).
      seconds_per_step: wall time per step (all seeds), compilation excluded.
      compile_seconds: compilation time of the training chunk.
      finished: whether every step ran.
      note: how it was run (tuning, temperature).
    """

    name: str
    num_samples: int
    f_evals: int | None
    steps: np.ndarray
    train_elbo: np.ndarray
    grad_variance: np.ndarray
    test_bound: np.ndarray | None
    seconds_per_step: float
    compile_seconds: float
    finished: bool
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run: its config and one :class:`EstimatorRun` per estimator."""

    config: Config
    results: tuple[EstimatorRun, ...]
    not_run: tuple[str, ...] = ()
    interruption: str | None = None

    @property
    def partial(self) -> bool:
        return bool(self.not_run) or any(not r.finished for r in self.results)


# --- the estimators ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    info: Any
    num_samples: int
    f_evals: int | None
    temperature: float | None  # None: no temperature


def resolve_estimators(problem: str, model: vae.Model, names: Sequence[str] | None, temperature):
    """The estimators to train: validated names with their sample counts and costs."""
    from jaxgrad._src.estimators.registry import ESTIMATORS

    table = BINARY_ESTIMATORS if model.variable == "bernoulli" else CATEGORICAL_ESTIMATORS
    names = list(table) if names is None else list(names)
    if not names:
        raise TrainError("--estimators is empty; name at least one estimator.")
    specs = []
    for name in names:
        if name not in ESTIMATORS:
            raise TrainError(
                f"--estimators: unknown estimator {name!r}; registry names: "
                f"{', '.join(ESTIMATORS)}."
            )
        info = ESTIMATORS[name]
        if not info.applies_to(model.variable):
            fits = [n for n, e in ESTIMATORS.items() if e.applies_to(model.variable)]
            raise TrainError(
                f"--estimators: {name!r} does not apply to {model.variable} latents "
                f"({problem}); applicable: {', '.join(fits)}."
            )
        if info.name == "exact":
            raise TrainError(
                f"--estimators: 'exact' enumerates 2^{model.latent_size} outcomes per image; "
                "choose a sampling estimator."
            )
        k = table.get(name, info.num_samples)
        k = max(k, info.min_num_samples)
        try:
            f_evals = info.cost(model.variable, model.latent_shape, k)
        except (KeyError, IndexError, TypeError, ValueError):
            f_evals = None
        default_temp = getattr(info, "temperature", None)
        if default_temp is not None and model.variable == "categorical":
            # Annealed from 1 (Jang et al. 2017): the registry's 0.5 is the schedule's floor.
            default_temp = CATEGORICAL_INITIAL_TEMPERATURE
        temp = None
        if default_temp is not None:
            temp = float(default_temp) if temperature is None else float(temperature)
        specs.append(_Spec(name, info, k, f_evals, temp))
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise TrainError(f"--estimators: {dup!r} is listed twice.")
    return specs


# --- one training step ---------------------------------------------------------


def _sum_sq(tree: Any) -> Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def _count(tree: Any) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


class _Trainer:
    """The compiled pieces of one estimator's training (all seeds at once)."""

    def __init__(self, config: Config, spec: _Spec, data: Array, test: Array):
        import optax

        self.config, self.spec = config, spec
        self.model = model = config.model
        self.f = vae.cost(model)
        self.opt = optax.adam(config.learning_rate)
        self.test = test  # the training data is an argument of the compiled step
        self.pixel_mean = jnp.mean(data[: config.train_images].astype(jnp.float32), axis=0)
        self.tuning = None
        self.note = ""
        params0 = self.init_params(jax.random.key(config.seeds[0]))
        x0 = data[0].astype(jnp.float32)
        logits0 = vae.encode(model, params0["encoder"], x0)
        args0 = vae.cost_args(model, params0, x0)
        from jaxgrad._src import dists

        self.dist = dists.bernoulli if model.variable == "bernoulli" else dists.categorical
        found = tunable(
            spec.name,
            self.f,
            logits0,
            args0,
            dist=self.dist,
            temperature=spec.temperature if spec.temperature is not None else 0.5,
            num_samples=spec.num_samples,
            f_takes_key=False,
            key=jax.random.fold_in(jax.random.key(config.seeds[0]), 7),
        )
        if found is not None:
            est, init, lr, what = found
            self.tuning = (est, init, lr)
            self.theta_opt = per_leaf_adam(lr)
            self.note = f"tuned online by variance_loss: {what}"
        elif spec.temperature is not None:
            if model.variable == "categorical" and config.anneal_rate > 0:
                self.note = (
                    f"temperature max({config.min_temperature:g}, {spec.temperature:g} "
                    f"exp(-{config.anneal_rate:g} step))"
                )
            else:
                self.note = f"temperature {spec.temperature:g}"

    # parameters and state

    def init_params(self, key: Any) -> dict[str, Any]:
        return vae.init(self.model, jax.random.fold_in(key, 0), self.pixel_mean)

    def init_state(self) -> dict[str, Any]:
        def one(seed_key):
            params = self.init_params(seed_key)
            enc0 = jax.tree.map(jnp.zeros_like, params["encoder"])
            state = {
                "params": params,
                "opt": self.opt.init(params),
                "m1": enc0,
                "m2": enc0,
            }
            if self.tuning is not None:
                theta = self.tuning[1]
                state["theta"] = theta
                state["theta_opt"] = self.theta_opt.init(theta)
            return state

        return jax.vmap(one)(self.seed_keys())

    def seed_keys(self) -> Array:
        return jnp.stack([jax.random.key(s) for s in self.config.seeds])

    def temperature(self, step: Array) -> Array | None:
        t0 = self.spec.temperature
        if t0 is None:
            return None
        if self.model.variable != "categorical":
            return jnp.asarray(t0, jnp.float32)
        import optax

        c = self.config
        # max(min_t, t0 exp(-r t)): optax's exponential decay, floored here. (Its own
        # `end_value` is a ceiling, not a floor, when the decay rate is 1, i.e. at
        # anneal rate 0: it would clip a constant temperature down to the floor.)
        schedule = optax.exponential_decay(
            init_value=t0, transition_steps=1, decay_rate=math.exp(-c.anneal_rate)
        )
        with jax.numpy_dtype_promotion("standard"):
            value = jnp.maximum(schedule(step), min(c.min_temperature, t0))
            return jnp.asarray(value, jnp.float32)

    def estimator(self, temperature: Array | None) -> Callable[..., Array]:
        """``est(key, logits, theta, *args)``; ``theta`` is ``()`` when nothing is tuned."""
        if self.tuning is not None:
            return self.tuning[0]
        kw: dict[str, Any] = {"dist": self.dist, "num_samples": self.spec.num_samples}
        if temperature is not None:
            kw["temperature"] = temperature
        est = self.spec.info.build(self.f, **kw)
        return lambda key, logits, theta, *args: est(key, logits, *args)

    def loss(self, params, theta, x, keys, step):
        """The batch mean of ``f`` through the estimator plus the analytic term."""
        model = self.model
        est = self.estimator(self.temperature(step))
        logits = jax.vmap(lambda xx: vae.encode(model, params["encoder"], xx))(x)

        def one(key, l, xx):
            return est(key, l, theta, *vae.cost_args(model, params, xx))

        values = jax.vmap(one)(keys, logits, x)
        analytic = jax.vmap(lambda l: vae.analytic_term(model, l))(logits)
        return jnp.mean(values + analytic)

    def step(self, state, step, seed_key, data):
        """One training step of one seed; returns ``(state, (elbo, grad_variance))``."""
        c = self.config
        k = jax.random.fold_in(seed_key, step + 1)
        k_batch, k_est, k_elbo = jax.random.split(k, 3)
        idx = jax.random.randint(k_batch, (c.batch_size,), 0, c.train_images)
        x = data[idx].astype(jnp.float32)
        keys = jax.random.split(k_est, c.batch_size)
        params = state["params"]
        new = dict(state)
        if self.tuning is None:
            grads = jax.grad(self.loss)(params, (), x, keys, step)
        else:

            def variance(theta):
                g = jax.grad(self.loss)(params, theta, x, keys, step)
                return _sum_sq(g["encoder"]), g

            d_theta, grads = jax.grad(variance, has_aux=True)(state["theta"])
            with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 count in
                updates, new["theta_opt"] = self.theta_opt.update(d_theta, state["theta_opt"])
            new["theta"] = jax.tree.map(lambda t, u: t + u.astype(t.dtype), state["theta"], updates)
        elbo = jnp.mean(vae.elbo_samples(self.model, params, k_elbo, x))
        with jax.numpy_dtype_promotion("standard"):
            updates, new["opt"] = self.opt.update(grads, state["opt"], params)
        new["params"] = jax.tree.map(lambda p, u: p + u, params, updates)
        d = EMA_DECAY
        g_enc = grads["encoder"]
        new["m1"] = jax.tree.map(lambda m, g: d * m + (1 - d) * g, state["m1"], g_enc)
        new["m2"] = jax.tree.map(lambda m, g: d * m + (1 - d) * g * g, state["m2"], g_enc)
        correction = 1.0 - d ** (step + 1).astype(jnp.float32)
        spread = jax.tree.map(
            lambda a, b: jnp.sum(b / correction - jnp.square(a / correction)), new["m1"], new["m2"]
        )
        variance = sum(jax.tree.leaves(spread)) / _count(g_enc)
        return new, (elbo, variance)

    def chunk_fn(self, length: int):
        """``(state, start, data) -> (state, (elbo [length, S], variance [length, S]))``, jitted."""
        seed_keys = self.seed_keys()

        def chunk(state, start, data):  # data an argument: not a 39 MB constant in the program
            def body(st, i):
                return jax.vmap(self.step, in_axes=(0, None, 0, None))(
                    st, start + i, seed_keys, data
                )

            return jax.lax.scan(body, state, jnp.arange(length, dtype=jnp.int32))

        return jax.jit(chunk)  # no donation: the last finished state must survive a Ctrl-C

    def test_bound(self, state) -> np.ndarray:
        """The mean 100-sample IWAE bound over the test images, per seed."""
        model, test = self.model, self.test
        n = test.shape[0]
        batch = min(n, 50)
        usable = (n // batch) * batch
        images = test[:usable].astype(jnp.float32).reshape(-1, batch, vae.PIXELS)

        def per_seed(params, seed_key):
            key = jax.random.fold_in(seed_key, -1 % (2**31))

            def one_batch(carry, i_x):
                i, xs = i_x
                ks = jax.random.split(jax.random.fold_in(key, i), batch)
                b = jax.vmap(lambda kk, xx: vae.iwae_bound(model, params, kk, xx, IWAE_SAMPLES))(
                    ks, xs
                )
                return carry + jnp.sum(b), None

            total, _ = jax.lax.scan(
                one_batch, jnp.zeros((), jnp.float32), (jnp.arange(images.shape[0]), images)
            )
            return total / usable

        bound = jax.jit(jax.vmap(per_seed))(state["params"], self.seed_keys())
        return np.asarray(bound, np.float64)


# --- checkpoints -----------------------------------------------------------------


def fingerprint(config: Config, spec: _Spec) -> str:
    """A hash of everything that determines an estimator's run (checkpoints must match)."""
    rec = config.record()
    rec.pop("data")  # the same data at another path is the same run
    rec["model"].pop("description")  # prose, derived from the fields
    rec["estimator"] = [spec.name, spec.num_samples, spec.temperature]
    rec["jax"] = jax.__version__
    rec["format"] = CHECKPOINT_FORMAT
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    from jaxgrad._src.study import temporary_file

    tmp = temporary_file(folder, ".ckpt-", ".npz")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str, fp: str, state, logged: dict[str, list], extra: dict) -> None:
    """Writes the state and the logged curves atomically to ``path``."""
    leaves = jax.tree.leaves(state)
    arrays = {f"state_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["fingerprint"] = np.asarray(fp)
    for k, v in logged.items():
        arrays[f"log_{k}"] = np.asarray(v, np.float64)
    for k, v in extra.items():
        arrays[f"extra_{k}"] = np.asarray(v)
    _save_npz(path, arrays)


def load_checkpoint(path: str, fp: str, template):
    """``(state, logged, extra)`` from ``path``, or ``None`` if there is none.

    Raises:
      TrainError: if the checkpoint belongs to a run with other settings.
    """
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp:
                raise TrainError(
                    f"--out: checkpoint {path!r} belongs to a run with other settings; "
                    "use another --out, or --fresh to discard it."
                )
            leaves, treedef = jax.tree.flatten(template)
            new = [
                jnp.asarray(z[f"state_{i}"], dtype=x.dtype).reshape(x.shape)
                for i, x in enumerate(leaves)
            ]
            logged = {k[4:]: list(z[k]) for k in z.files if k.startswith("log_")}
            extra = {k[6:]: z[k] for k in z.files if k.startswith("extra_")}
    except TrainError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is a user-visible error
        raise TrainError(
            f"--out: cannot read checkpoint {path!r} ({type(err).__name__}); "
            "use --fresh to discard it."
        ) from None
    return jax.tree.unflatten(treedef, new), logged, extra


# --- the run -----------------------------------------------------------------------


def train_estimator(
    config: Config,
    spec: _Spec,
    data: Array,
    test: Array,
    *,
    checkpoint: str | None = None,
    checkpoint_seconds: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
) -> EstimatorRun:
    """Trains one estimator on every seed; resumes from ``checkpoint`` if it exists.

    ``stop_after`` (for tests) stops after that many steps as if interrupted.
    """
    trainer = _Trainer(config, spec, data, test)
    fp = fingerprint(config, spec)
    state = trainer.init_state()
    logged: dict[str, list] = {"steps": [], "elbo": [], "variance": [], "seconds": []}
    done, compile_s = 0, 0.0
    test_bound = None
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, fp, state)
        if loaded is not None:
            state, got, extra = loaded
            logged.update({k: list(v) for k, v in got.items()})
            done = int(extra["done"])
            compile_s = float(extra.get("compile_seconds", 0.0))
            if "test_bound" in extra:
                test_bound = np.asarray(extra["test_bound"], np.float64)
    elbo_rows = [np.asarray(r) for r in logged["elbo"]]
    var_rows = [np.asarray(r) for r in logged["variance"]]
    compiled: dict[int, Any] = {}
    last_save = time.perf_counter()

    def save():
        if checkpoint is None:
            return
        extra = {"done": done, "compile_seconds": compile_s}
        if test_bound is not None:
            extra["test_bound"] = test_bound
        log = {
            "steps": logged["steps"],
            "seconds": logged["seconds"],
            "elbo": np.asarray(elbo_rows).reshape(-1, len(config.seeds)),
            "variance": np.asarray(var_rows).reshape(-1, len(config.seeds)),
        }
        save_checkpoint(checkpoint, fp, state, log, extra)

    def result(finished: bool) -> EstimatorRun:
        seconds = np.asarray(logged["seconds"], np.float64)
        sizes = np.diff(np.concatenate([[0], np.asarray(logged["steps"], np.float64)]))
        per_step = float(seconds.sum() / sizes.sum()) if sizes.sum() else math.nan
        return EstimatorRun(
            name=spec.name,
            num_samples=spec.num_samples,
            f_evals=spec.f_evals,
            steps=np.asarray(logged["steps"], np.int64),
            train_elbo=np.asarray(elbo_rows, np.float64).reshape(-1, len(config.seeds)),
            grad_variance=np.asarray(var_rows, np.float64).reshape(-1, len(config.seeds)),
            test_bound=test_bound,
            seconds_per_step=per_step,
            compile_seconds=compile_s,
            finished=finished,
            note=trainer.note,
        )

    if progress is not None:
        progress(done, config.steps)
    try:
        while done < config.steps:
            if stop_after is not None and done >= stop_after:
                raise KeyboardInterrupt
            length = min(config.log_every, config.steps - done)
            start = jnp.asarray(done, jnp.int32)
            if length not in compiled:
                t0 = time.perf_counter()
                compiled[length] = trainer.chunk_fn(length).lower(state, start, data).compile()
                compile_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            new_state, (elbo, var) = compiled[length](state, start, data)
            elbo = np.asarray(elbo, np.float64)
            var = np.asarray(var, np.float64)
            jax.block_until_ready(new_state)
            seconds = time.perf_counter() - t0
            # Only a chunk whose state and curves are both in hand counts as done.
            state, done = new_state, done + length
            logged["steps"].append(done)
            logged["seconds"].append(seconds)
            elbo_rows.append(elbo.mean(axis=0))
            var_rows.append(var[-1])
            if progress is not None:
                progress(done, config.steps)
            if time.perf_counter() - last_save >= checkpoint_seconds or done == config.steps:
                save()
                last_save = time.perf_counter()
        if test_bound is None:
            test_bound = trainer.test_bound(state)
            save()
    except KeyboardInterrupt as err:
        save()
        err.partial_run = result(False)  # type: ignore[attr-defined]
        raise
    return result(True)


# --- a whole run: every estimator --------------------------------------------------


def load_data(path: str, train_images: int | None, test_images: int):
    """The training and test images as uint8 device arrays (the first ones of each split)."""
    from jaxgrad._src import problems

    try:
        x = problems.load_binarized_mnist(path, "train")
        xt = problems.load_binarized_mnist(path, "test")
    except problems.ProblemError as err:
        raise TrainError(str(err).replace("binary-vae: ", "--data: ", 1)) from None
    n = len(x) if train_images is None else train_images
    if not 1 <= n <= len(x):
        raise TrainError(f"--train-images must be in [1, {len(x)}], got {n}.")
    if not 1 <= test_images <= len(xt):
        raise TrainError(f"--test-images must be in [1, {len(xt)}], got {test_images}.")
    return jnp.asarray(x[:n], jnp.uint8), jnp.asarray(xt[:test_images], jnp.uint8)


def train(
    config: Config,
    specs: Sequence[_Spec],
    data: Array,
    test: Array,
    *,
    checkpoint_dir: str | None = None,
    checkpoint_seconds: float = 30.0,
    progress: Any = None,
    stop_after: int | None = None,
) -> Run:
    """Trains with every estimator in turn; see the module docstring.

    ``progress`` has ``start(index, total, name)``, ``update(done, total)`` and
    ``finish(run_or_None)``. A ``KeyboardInterrupt`` propagates carrying the
    finished estimators as ``err.partial_run`` (a :class:`Run`); their
    checkpoints stay, so the same command resumes.
    """
    results: list[EstimatorRun] = []
    for i, spec in enumerate(specs, 1):
        if progress is not None:
            progress.start(i, len(specs), spec.name)
        path = None
        if checkpoint_dir is not None:
            path = os.path.join(checkpoint_dir, f"{spec.name}.npz")
        try:
            r = train_estimator(
                config,
                spec,
                data,
                test,
                checkpoint=path,
                checkpoint_seconds=checkpoint_seconds,
                progress=None if progress is None else progress.update,
                stop_after=stop_after,
            )
        except KeyboardInterrupt as err:
            part = getattr(err, "partial_run", None)
            done = [*results, part] if part is not None and len(part.steps) else list(results)
            rest = tuple(s.name for s in specs[i - 1 :] if part is None or s.name != part.name)
            err.partial_run = Run(config, tuple(done), rest, "KeyboardInterrupt")  # type: ignore[attr-defined]
            if progress is not None:
                progress.finish(None)
            raise
        results.append(r)
        if progress is not None:
            progress.finish(r)
    return Run(config, tuple(results))


# --- reporting ----------------------------------------------------------------------

#: The files a run writes in its folder.
TRAIN_FILES = {
    "csv": "train.csv",
    "curves": "train_curves.csv",
    "json": "train.json",
    "png": "train.png",
}


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return math.nan, math.nan
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(np.mean(x)), se


def _summary(r: EstimatorRun) -> dict[str, Any]:
    elbo = r.train_elbo[-1] if len(r.train_elbo) else np.zeros(0)
    var = r.grad_variance[-1] if len(r.grad_variance) else np.zeros(0)
    e, e_se = _mean_se(elbo)
    b, b_se = _mean_se(r.test_bound if r.test_bound is not None else np.zeros(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        lv, lv_se = _mean_se(np.log10(var)) if var.size else (math.nan, math.nan)
    return {
        "estimator": r.name,
        "num_samples": r.num_samples,
        "f_evals": r.f_evals,
        "steps_done": int(r.steps[-1]) if len(r.steps) else 0,
        "train_elbo": e,
        "train_elbo_se": e_se,
        "test_bound": b,
        "test_bound_se": b_se,
        "log10_grad_variance": lv,
        "log10_grad_variance_se": lv_se,
        "ms_per_step": 1e3 * r.seconds_per_step,
        "compile_s": r.compile_seconds,
        "finished": r.finished,
        "note": r.note,
    }


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def format_table(run: Run) -> str:
    """One row per estimator, best final training ELBO first; mean +- se over seeds."""
    c = run.config
    head = [
        f"{c.problem} ({c.model.describe()}): {c.steps} steps x {len(c.seeds)} seed(s), "
        f"batch {c.batch_size}, Adam lr {c.learning_rate:g}; ELBO over the last "
        f"{c.log_every} steps, IWAE-{IWAE_SAMPLES} bound on {c.test_images} test images",
    ]
    if run.partial:
        head.insert(
            0,
            f"PARTIAL RUN: stopped by {run.interruption}; not run: "
            f"{', '.join(run.not_run) or 'none'}",
        )
    rows = sorted(
        (_summary(r) for r in run.results),
        key=lambda s: -np.nan_to_num(s["train_elbo"], nan=-np.inf),
    )
    cols = [
        "estimator",
        "f-evals",
        "train ELBO",
        "+-se",
        "test bound",
        "+-se",
        "log10 var",
        "ms/step",
        "compile s",
    ]
    table = [cols]
    for s in rows:
        name = s["estimator"] + ("" if s["finished"] else f" (stopped at {s['steps_done']})")
        table.append(
            [
                name,
                "-" if s["f_evals"] is None else str(s["f_evals"]),
                _fmt(s["train_elbo"]),
                _fmt(s["train_elbo_se"]),
                _fmt(s["test_bound"]),
                _fmt(s["test_bound_se"]),
                _fmt(s["log10_grad_variance"]),
                _fmt(s["ms_per_step"], 1),
                _fmt(s["compile_s"], 1),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{s['estimator']}: {s['note']}" for s in rows if s["note"]]
    return "\n".join(head + [""] + lines + ([""] + notes if notes else []))


def document(run: Run, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything of a run as JSON-ready data: settings, versions, results, curves."""
    from jaxgrad._src.study import _clean, versions

    results = []
    for r in run.results:
        rec = _summary(r)
        rec["curves"] = {
            "steps": r.steps.tolist(),
            "train_elbo": r.train_elbo.T.tolist(),
            "grad_variance": r.grad_variance.T.tolist(),
        }
        rec["test_bound_per_seed"] = None if r.test_bound is None else r.test_bound.tolist()
        results.append(rec)
    return _clean(
        {
            "command": list(argv) if argv is not None else None,
            "settings": run.config.record(),
            "partial": run.partial,
            "interruption": run.interruption,
            "not_run": list(run.not_run),
            "results": results,
            "versions": versions(),
            "device": str(jax.devices()[0].platform),
        }
    )


def load_run(path: str) -> Run:
    """The :class:`Run` a ``train.json`` describes (to re-plot or compare finished runs)."""
    with open(path) as fh:
        doc = json.load(fh)
    settings = dict(doc["settings"])
    model = settings.pop("model")
    model.pop("description", None)
    model = vae.Model(
        **{**model, "latent_shape": tuple(model["latent_shape"]), "hidden": tuple(model["hidden"])}
    )
    fields = {f.name for f in dataclasses.fields(Config)}
    config = Config(
        **{
            **{k: v for k, v in settings.items() if k in fields},
            "model": model,
            "seeds": tuple(settings["seeds"]),
        }
    )

    def arr(x):
        return np.asarray([np.nan if v is None else v for v in np.ravel(x)], np.float64).reshape(
            np.shape(x)
        )

    results = []
    for r in doc["results"]:
        c = r["curves"]
        bound = r["test_bound_per_seed"]
        results.append(
            EstimatorRun(
                name=r["estimator"],
                num_samples=r["num_samples"],
                f_evals=r["f_evals"],
                steps=np.asarray(c["steps"], np.int64),
                train_elbo=arr(c["train_elbo"]).T.reshape(len(c["steps"]), -1),
                grad_variance=arr(c["grad_variance"]).T.reshape(len(c["steps"]), -1),
                test_bound=None if bound is None else arr(bound),
                seconds_per_step=(r["ms_per_step"] or math.nan) / 1e3,
                compile_seconds=r["compile_s"] or math.nan,
                finished=r["finished"],
                note=r["note"],
            )
        )
    return Run(config, tuple(results), tuple(doc["not_run"]), doc["interruption"])


def plot_run(run: Run, path: str) -> None:
    """Training ELBO and encoder-gradient variance against steps (mean +- se over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20")
    for i, r in enumerate(run.results):
        if not len(r.steps):
            continue
        style = {"color": colors(i % 20), "linestyle": ("-", "--", ":")[(i // 10) % 3]}
        for ax, y, log in ((ax1, r.train_elbo, False), (ax2, r.grad_variance, True)):
            y = np.log10(y) if log else y
            m = y.mean(axis=1)
            se = y.std(axis=1, ddof=1) / math.sqrt(y.shape[1]) if y.shape[1] > 1 else 0 * m
            ax.plot(r.steps, m, label=r.name, **style)
            ax.fill_between(r.steps, m - se, m + se, color=style["color"], alpha=0.2)
    c = run.config
    fig.suptitle(f"{c.problem}: {c.model.describe()}", fontsize=10)
    ax1.set(xlabel="step", ylabel="training ELBO (nats)")
    ax2.set(xlabel="step", ylabel="log10 encoder-gradient variance (EMA 0.999)")
    ax1.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_run(
    run: Run, out: str, *, plot: bool = True, argv: Sequence[str] | None = None
) -> dict[str, str]:
    """Writes ``train.csv``, ``train_curves.csv``, ``train.json`` and ``train.png`` to ``out``.

    Each file goes to a temporary file in ``out`` and is renamed into place
    once all are written, the JSON last, so a crash never leaves half a file.
    """
    import csv

    from jaxgrad._src.study import (
        _write_json,
        check_output_dir,
        plot_or_skip,
        write_files_atomically,
    )

    out = check_output_dir(out, "write_run")
    doc = document(run, argv)

    def write_csv(path):
        skip = ("curves", "test_bound_per_seed")
        cols = [k for k in doc["results"][0] if k not in skip] if doc["results"] else ["estimator"]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for rec in doc["results"]:
                w.writerow(["" if rec[k] is None else rec[k] for k in cols])

    def write_curves(path):
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["estimator", "seed", "step", "train_elbo", "grad_variance"])
            for r in run.results:
                for j, seed in enumerate(run.config.seeds):
                    for p, step in enumerate(r.steps):
                        elbo, var = float(r.train_elbo[p, j]), float(r.grad_variance[p, j])
                        w.writerow([r.name, seed, int(step), repr(elbo), repr(var)])

    writers = {"csv": write_csv, "curves": write_curves}
    if plot and run.results:
        writers["png"] = plot_or_skip(lambda path: plot_run(run, path), "write_run")
    writers["json"] = lambda path: _write_json(path, doc)
    return write_files_atomically(out, TRAIN_FILES, writers)
