"""Corrupted MNIST files are found when the data is loaded (before any training): the shipped MD5SUMS, the gzip
stream, the label range; each a one-line DataError naming the file."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from conftest import real_data_root

from tl_hf.run.data.images import ImageDataConfig, load_image_classification
from tl_hf.run.data.mnist import MNIST_FILES, load_mnist_idx
from tl_hf.run.data.paths import DataError


@pytest.fixture
def mnist_copy(tmp_path):
    src = real_data_root("mnist_t10k/MD5SUMS") / "mnist_t10k"
    dst = tmp_path / "mnist_t10k"
    shutil.copytree(src, dst)
    return dst


def test_shipped_files_pass_the_checks(mnist_copy):
    images, labels = load_mnist_idx(mnist_copy.parent)
    assert images.shape == (10000, 28, 28) and labels.max() == 9


def test_truncated_gz_fails_the_md5_check(mnist_copy):
    p = mnist_copy / MNIST_FILES[0]
    p.write_bytes(p.read_bytes()[:100_000])
    with pytest.raises(DataError) as e:
        load_mnist_idx(mnist_copy.parent)
    msg = str(e.value)
    assert "\n" not in msg and MNIST_FILES[0] in msg and "corrupt or truncated" in msg
    assert "4bec579dddc777a073fb1950567b8fe4" in msg and "MD5SUMS" in msg
    with pytest.raises(DataError, match="corrupt or truncated"):  # the image recipe reports it before training
        load_image_classification(ImageDataConfig(dataset="mnist", root=str(mnist_copy.parent)), image_size=28)


def test_truncated_gz_without_md5sums_is_a_gzip_error(mnist_copy):
    (mnist_copy / "MD5SUMS").unlink()
    p = mnist_copy / MNIST_FILES[1]
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(DataError, match=rf"{MNIST_FILES[1]} is not a readable gzip file \(EOFError"):
        load_mnist_idx(mnist_copy.parent)


def test_label_out_of_range_is_named(mnist_copy):
    (mnist_copy / "MD5SUMS").unlink()
    p = mnist_copy / MNIST_FILES[1]
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[8 + 17] = 12
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=rf"{MNIST_FILES[1]}: label 12 at index 17 is outside 0..9 \(1 such"):
        load_mnist_idx(mnist_copy.parent)
    assert np.frombuffer(raw, np.uint8, offset=8)[17] == 12
