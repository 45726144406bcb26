"""jaxgrad.data: the binarized MNIST loader, its errors and its opt-in synthetic fallback."""

import os

import numpy as np
import pytest

from jaxgrad import data


def _write_npz(path, rng, sizes=(5, 3, 2)):
    """A small file in the data set's format; returns the unpacked pixels per split."""
    pixels = {s: rng.random((n, 784)) < 0.2 for s, n in zip(data.SPLITS, sizes, strict=True)}
    np.savez(path, **{s: np.packbits(x, axis=1) for s, x in pixels.items()})
    return pixels


def test_reads_each_split_of_a_file_in_the_format(tmp_path, rng):
    pixels = _write_npz(tmp_path / "binarized_mnist.npz", rng)
    for split, expected in pixels.items():
        # a folder holding binarized_mnist.npz works like the file itself
        for path in (tmp_path / "binarized_mnist.npz", tmp_path):
            d = data.binarized_mnist(split, path)
            assert (d.source, d.path) == ("mnist", str(tmp_path / "binarized_mnist.npz"))
            assert d.images.dtype == np.float32 and d.images.shape == expected.shape
            np.testing.assert_array_equal(d.images, expected.astype(np.float32))


def test_default_path_follows_the_environment_variable(tmp_path, rng, monkeypatch):
    pixels = _write_npz(tmp_path / "binarized_mnist.npz", rng)
    monkeypatch.setenv("JAXGRAD_DATA", str(tmp_path))
    assert data.default_path() == str(tmp_path / "binarized_mnist.npz")
    np.testing.assert_array_equal(data.binarized_mnist("valid").images, pixels["valid"])


def test_missing_file_is_an_error_naming_the_path_and_the_variable(tmp_path, monkeypatch):
    missing = str(tmp_path / "no-such.npz")
    with pytest.raises(FileNotFoundError) as err:
        data.binarized_mnist("train", missing)
    message = str(err.value)
    assert "binarized_mnist" in message and missing in message and "JAXGRAD_DATA" in message
    assert "synthetic_fallback=True" in message and "\n" not in message
    monkeypatch.setenv("JAXGRAD_DATA", missing)  # the default path is the variable's
    with pytest.raises(FileNotFoundError, match="JAXGRAD_DATA"):
        data.binarized_mnist()


def test_fallback_warns_loudly_and_returns_synthetic_binary_images(tmp_path):
    missing = str(tmp_path / "no-such.npz")
    with pytest.warns(UserWarning, match="NOT FOUND") as caught:
        train = data.binarized_mnist("train", missing, synthetic_fallback=True, num_synthetic=300)
    message = str(caught[0].message)
    assert missing in message and "SYNTHETIC" in message and "NOT MNIST" in message
    assert caught[0].filename == __file__  # attributed to the caller, not to jaxgrad
    assert (train.source, train.path) == ("synthetic", missing)
    assert train.images.shape == (300, 784) and train.images.dtype == np.float32
    assert set(np.unique(train.images)) == {0.0, 1.0}
    # noisy copies of 10 Bernoulli(0.3) prototypes with 5% flips: pixel mean 0.3 * 0.95 + 0.7 *
    # 0.05 = 0.32, and an image differs from its prototype in about 5% of its pixels, from
    # another prototype's copies in about 2 * 0.3 * 0.7 = 42%: so there are ~10 clusters.
    assert abs(float(train.images.mean()) - 0.32) < 0.01
    with pytest.warns(UserWarning, match="NOT FOUND"):
        valid = data.binarized_mnist("valid", missing, synthetic_fallback=True, num_synthetic=300)
    assert not np.array_equal(valid.images, train.images)  # other images ...
    # ... of the same prototypes: every valid image is close to some train image (distance
    # ~2 * 5% = 10% of the pixels to a copy of its prototype, ~42% to the others)
    hamming = np.abs(valid.images[:, None, :] - train.images[None, :50, :]).mean(-1)
    nearest = hamming.min(axis=1)
    assert nearest.max() < 0.2, nearest.max()
    with pytest.warns(UserWarning):  # deterministic: the same call gives the same images
        again = data.binarized_mnist("train", missing, synthetic_fallback=True, num_synthetic=300)
    np.testing.assert_array_equal(again.images, train.images)


def test_a_corrupt_file_is_an_error_even_with_the_fallback(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=r"^binarized_mnist: cannot read .*bad\.npz"):
        data.binarized_mnist("train", bad, synthetic_fallback=True)
    np.savez(tmp_path / "wrong.npz", train=np.zeros((2, 784), np.uint8))
    with pytest.raises(ValueError, match=r"binarized_mnist: array 'train' .* shape \(2, 784\)"):
        data.binarized_mnist("train", tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match=r"binarized_mnist: .* has no array 'test'"):
        data.binarized_mnist("test", tmp_path / "wrong.npz")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "validation"}, r"binarized_mnist: split must be one of train, valid, test"),
        ({"num_synthetic": 0}, r"binarized_mnist: num_synthetic must be a positive int, got 0"),
        ({"num_synthetic": 2.5}, r"binarized_mnist: num_synthetic must be a positive int"),
    ],
)
def test_static_argument_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.binarized_mnist(path=tmp_path / "no-such.npz", synthetic_fallback=True, **kwargs)


def test_the_shared_data_set():
    path = data.default_path()
    if not os.path.exists(path):
        pytest.skip(f"the shared data set is absent: {path}")
    train = data.binarized_mnist("train")
    assert (train.source, train.path) == ("mnist", path)
    assert train.images.shape == (50_000, 784) and train.images.dtype == np.float32
    assert abs(float(train.images.mean()) - 0.131) < 0.005
    assert np.array_equal(np.unique(train.images[:1000]), [0.0, 1.0])
    valid = data.binarized_mnist("valid")
    assert valid.images.shape == (10_000, 784)
