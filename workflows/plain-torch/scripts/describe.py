"""A CPU-only step beside the training: class counts and pixel statistics of a data split."""

import argparse
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = np.load(args.data)
    counts = np.bincount(data["y"], minlength=10)
    summary = {"n": int(len(data["y"])), "class_counts": counts.tolist(), "pixel_mean": float(data["x"].mean())}
    tmp = f"{args.out}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
