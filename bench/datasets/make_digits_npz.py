"""Builds a MedMNIST-format .npz (train/val/test images uint8 [n, 28, 28], labels [n, 1]) from
scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download): a small, low-resolution
10-class set for trying the CASS options on a dataset of medical size.

    pip install scikit-learn numpy && python3 bench/datasets/make_digits_npz.py /tmp/digits.npz
"""
import sys

import numpy as np
from sklearn.datasets import load_digits

out = sys.argv[1] if len(sys.argv) > 1 else "digits.npz"
d = load_digits()
# 0-16 grey levels -> 0-255, 8x8 -> 28x28 by nearest-neighbour repetition (3x) and a 2-pixel border.
img = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
img = np.kron(img, np.ones((1, 3, 3), dtype=np.uint8))
img = np.pad(img, ((0, 0), (2, 2), (2, 2)))
lab = d.target.astype(np.uint8).reshape(-1, 1)
order = np.random.default_rng(0).permutation(len(img))
img, lab = img[order], lab[order]
n_train, n_val = 1200, 200
np.savez(
    out,
    train_images=img[:n_train], train_labels=lab[:n_train],
    val_images=img[n_train:n_train + n_val], val_labels=lab[n_train:n_train + n_val],
    test_images=img[n_train + n_val:], test_labels=lab[n_train + n_val:],
)
print(out, {k: v.shape for k, v in np.load(out).items()})
