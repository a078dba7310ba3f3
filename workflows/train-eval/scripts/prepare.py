"""Split scikit-learn's bundled digits (8x8 images, 10 classes; no download) into train and test sets."""

import argparse
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def save_atomically(path: str, **arrays: np.ndarray) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=args.seed, stratify=y)
    for path in (args.train, args.test):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_atomically(args.train, x=x_train, y=y_train.astype(np.int64))
    save_atomically(args.test, x=x_test, y=y_test.astype(np.int64))
    print(f"prepared {len(y_train)} training and {len(y_test)} test images")


if __name__ == "__main__":
    main()
