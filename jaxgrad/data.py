"""The shared data set: statically binarized MNIST, with an opt-in, loud synthetic stand-in.

Binarized MNIST (Larochelle & Murray, 2011) is the data set of the binary-VAE
benchmarks in the ARM, DisARM, REBAR and RELAX papers: 28 x 28 images with
pixels in ``{0, 1}``, 50,000 ``train``, 10,000 ``valid`` and 10,000 ``test``
images. It is not shipped with jaxgrad; it is read from an ``.npz`` file
holding uint8 arrays ``train``, ``valid`` and ``test`` of shape ``(N, 98)``
(each row is 784 pixels packed with ``numpy.packbits``):

* :func:`default_path`: where it is looked for, ``$JAXGRAD_DATA`` (the file, or
  a folder holding ``binarized_mnist.npz``), else
  ``../shared/data/binarized_mnist.npz`` beside the repository;
* :func:`binarized_mnist`: one split as float32 ``(N, 784)``, or, only if asked
  (``synthetic_fallback=True``) and only when the file is missing, synthetic
  binary images with a loud warning; the returned :class:`BinarizedMNIST`
  says which one it is (``source``) and from where (``path``).

The synthetic stand-in is noisy copies of ten random binary prototypes,
:math:`x = \\pi_c \\oplus e` with :math:`\\pi_{c,d} \\sim \\mathrm{Bernoulli}(0.3)`
drawn once, :math:`c` uniform over the ten and flips :math:`e_d \\sim
\\mathrm{Bernoulli}(0.05)`: binary data with low-dimensional structure for a
latent code to find, so that code written for MNIST runs end to end. Its
numbers are not MNIST numbers.

References:
  Larochelle & Murray, *The Neural Autoregressive Distribution Estimator*,
  AISTATS 2011. https://proceedings.mlr.press/v15/larochelle11a.html ;
  Salakhutdinov & Murray, *On the Quantitative Analysis of Deep Belief
  Networks*, ICML 2008 (the binarization). https://doi.org/10.1145/1390156.1390266
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np

from jaxgrad._src import problems

__all__ = ["SPLITS", "BinarizedMNIST", "binarized_mnist", "default_path"]

#: The splits of the data set, in the order of its file.
SPLITS = ("train", "valid", "test")

_NUM_PROTOTYPES, _PROTOTYPE_P, _FLIP_P = 10, 0.3, 0.05


class BinarizedMNIST(NamedTuple):
    """One split of binarized MNIST, or its synthetic stand-in.

    Attributes:
      images: float32 NumPy array ``(N, 784)`` with values in ``{0, 1}``.
      source: ``"mnist"`` if read from the file, ``"synthetic"`` for the fallback.
      path: the file that was read, or that was looked for and not found.
    """

    images: np.ndarray
    source: str
    path: str


def default_path() -> str:
    """Where the binarized MNIST ``.npz`` is looked for when no path is given.

    ``$JAXGRAD_DATA`` if it is set (the ``.npz``, or a folder holding
    ``binarized_mnist.npz``); otherwise ``../shared/data/binarized_mnist.npz``
    resolved against the repository root, so the answer does not depend on the
    working directory. The file may not exist.

    Returns:
      The path, as a string.

    Example:
      >>> import os, unittest.mock, jaxgrad.data
      >>> with unittest.mock.patch.dict(os.environ, {"JAXGRAD_DATA": "/data/mnist.npz"}):
      ...     jaxgrad.data.default_path()
      '/data/mnist.npz'
    """
    return problems.default_data_path()


def _synthetic(num: int, split: str) -> np.ndarray:
    """``num`` noisy copies of the ten fixed prototypes; each split its own images."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((_NUM_PROTOTYPES, 784)) < _PROTOTYPE_P
    if split != "train":  # the same prototypes, other images and flips
        rng = np.random.default_rng([0, SPLITS.index(split)])
    flips = rng.random((num, 784)) < _FLIP_P
    labels = rng.integers(0, _NUM_PROTOTYPES, num)
    return (prototypes[labels] ^ flips).astype(np.float32)


def binarized_mnist(
    split: str = "train",
    path: str | os.PathLike | None = None,
    *,
    synthetic_fallback: bool = False,
    num_synthetic: int = 2000,
) -> BinarizedMNIST:
    r"""Loads one split of binarized MNIST as float32 ``(N, 784)`` in ``{0, 1}``.

    The file is an ``.npz`` with uint8 arrays ``train``, ``valid``, ``test`` of
    shape ``(N, 98)``, 784 pixels a row packed with ``numpy.packbits``.
    A missing file is an error, unless ``synthetic_fallback=True``: then a
    warning with a banner (on stderr, through :func:`warnings.warn`) says that
    the data is missing and that the numbers computed from it are not MNIST
    numbers, and ``num_synthetic`` synthetic images are returned, noisy copies
    :math:`\pi_c \oplus e` of ten random binary prototypes (see the module
    docstring; ``"train"`` and the other splits share the prototypes and
    differ in the images). A file that exists but is not in the format above
    is always an error.

    Args:
      split: ``"train"`` (50,000 images), ``"valid"`` or ``"test"`` (10,000 each).
      path: the ``.npz``, or a folder holding ``binarized_mnist.npz``; default
        :func:`default_path` (``$JAXGRAD_DATA``, else the shared data set
        beside the repository).
      synthetic_fallback: if true, a missing file gives the synthetic images
        (with a warning) instead of an error.
      num_synthetic: the number of synthetic images (only used by the fallback).

    Returns:
      A :class:`BinarizedMNIST` ``(images, source, path)``: ``source`` is
      ``"mnist"`` or ``"synthetic"``, ``path`` the file read or looked for.

    Raises:
      ValueError: if ``split`` is not one of :data:`SPLITS`, ``num_synthetic``
        is not a positive int, or the file is not an ``.npz`` in the format above.
      FileNotFoundError: if the file does not exist and ``synthetic_fallback``
        is false.

    Example:
      >>> import warnings, jaxgrad.data
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     d = jaxgrad.data.binarized_mnist(
      ...         path="no-such.npz", synthetic_fallback=True, num_synthetic=100)
      >>> d.images.shape, d.images.dtype, d.source, "NOT FOUND" in str(caught[0].message)
      ((100, 784), dtype('float32'), 'synthetic', True)
    """
    fn = "binarized_mnist"
    if split not in SPLITS:
        raise ValueError(f"{fn}: split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if isinstance(num_synthetic, bool) or not isinstance(num_synthetic, int | np.integer):
        raise ValueError(f"{fn}: num_synthetic must be a positive int, got {num_synthetic!r}.")
    if num_synthetic < 1:
        raise ValueError(f"{fn}: num_synthetic must be a positive int, got {num_synthetic}.")
    path = default_path() if path is None else os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "binarized_mnist.npz")
    if os.path.exists(path):
        try:
            images = problems.load_binarized_mnist(path, split)
        except problems.ProblemError as err:
            raise ValueError(f"{fn}: {str(err).removeprefix('binary-vae: ')}") from None
        return BinarizedMNIST(images, "mnist", path)
    if not synthetic_fallback:
        raise FileNotFoundError(
            f"{fn}: data file {path!r} does not exist; pass path= (the .npz or its folder) or "
            f"set {problems.DATA_ENV}, or pass synthetic_fallback=True for synthetic stand-in data."
        )
    num = int(num_synthetic)
    banner = "!" * 78
    warnings.warn(
        f"\n{banner}\nbinarized MNIST NOT FOUND at {path}.\nSet {problems.DATA_ENV} to the .npz "
        f"(or its folder). Falling back to {num} SYNTHETIC binary images: the numbers "
        f"below are NOT MNIST numbers.\n{banner}",
        stacklevel=2,
    )
    return BinarizedMNIST(_synthetic(num, split), "synthetic", path)
