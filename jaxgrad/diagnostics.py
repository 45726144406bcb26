"""Tools to study gradient estimators: many independent estimates, their
statistics against exact answers, exact oracles, and the z-test the test suite
uses.

Estimates are drawn with ``vmap`` over keys in chunks of ``batch_size`` keys
(memory is bounded by one chunk per device) and, when several devices are
present, the chunks are spread over all of them with ``jax.shard_map``. The
``n``-th estimate always uses the key ``jax.random.fold_in(key, n)`` (for the
default threefry implementation this equals ``jax.random.split(key, N)[n]``),
so the numbers do not depend on the number of devices or processes (nor,
up to XLA's code for each ``vmap`` width, on the chunk size);
:func:`grad_stats` reduces them in one fixed order, so its statistics are
bit-identical for any device and process count too. With several processes
(``jax.distributed.initialize``) the keys are sharded over every device of
every process and the sums are merged by the same collectives.

:func:`study` compares several estimators on any model (registry names or your
own estimators) and returns a :class:`Study`: a ranked table, CSV/JSON files
and a plot, with bias and MSE against the exact gradient or, without one,
against the pooled unbiased estimators. ``jaxgrad study`` is this function on
the built-in problems.

What it offers:

* estimates and their statistics (``jaxgrad/_src/stats.py``): :func:`grad_samples`,
  :func:`grad_stats`, :class:`GradStats`;
* exact oracles and the z-test (``jaxgrad/_src/oracles.py``): :func:`exact_grad`,
  :func:`gaussian_test_function`, :func:`gaussian_expectation`,
  :func:`gaussian_exact_grad`, ``GAUSSIAN_TEST_FUNCTIONS``, :func:`assert_unbiased`;
* studies (``jaxgrad/_src/study.py``): :func:`study`, :class:`Study`,
  :class:`StudyResult`, :class:`Reference`, :func:`pooled_reference`,
  :func:`format_table`, :func:`write_study`, :func:`plot_study`,
  :func:`check_output_dir`, :class:`StudyOutputError`, :func:`versions`,
  ``STUDY_FILES``, ``TUNING_STEPS``.
"""

from jaxgrad._src.oracles import GAUSSIAN_TEST_FUNCTIONS as GAUSSIAN_TEST_FUNCTIONS
from jaxgrad._src.oracles import assert_unbiased as assert_unbiased
from jaxgrad._src.oracles import exact_grad as exact_grad
from jaxgrad._src.oracles import gaussian_exact_grad as gaussian_exact_grad
from jaxgrad._src.oracles import gaussian_expectation as gaussian_expectation
from jaxgrad._src.oracles import gaussian_test_function as gaussian_test_function
from jaxgrad._src.stats import GradStats as GradStats
from jaxgrad._src.stats import grad_samples as grad_samples
from jaxgrad._src.stats import grad_stats as grad_stats
from jaxgrad._src.study import STUDY_FILES as STUDY_FILES
from jaxgrad._src.study import TUNING_STEPS as TUNING_STEPS
from jaxgrad._src.study import Reference as Reference
from jaxgrad._src.study import Study as Study
from jaxgrad._src.study import StudyOutputError as StudyOutputError
from jaxgrad._src.study import StudyResult as StudyResult
from jaxgrad._src.study import check_output_dir as check_output_dir
from jaxgrad._src.study import format_table as format_table
from jaxgrad._src.study import plot_study as plot_study
from jaxgrad._src.study import pooled_reference as pooled_reference
from jaxgrad._src.study import study as study
from jaxgrad._src.study import versions as versions
from jaxgrad._src.study import write_study as write_study

__all__ = [
    "GAUSSIAN_TEST_FUNCTIONS",
    "TUNING_STEPS",
    "STUDY_FILES",
    "GradStats",
    "Reference",
    "Study",
    "StudyOutputError",
    "StudyResult",
    "assert_unbiased",
    "check_output_dir",
    "exact_grad",
    "format_table",
    "gaussian_exact_grad",
    "gaussian_expectation",
    "gaussian_test_function",
    "grad_samples",
    "grad_stats",
    "plot_study",
    "pooled_reference",
    "study",
    "versions",
    "write_study",
]
