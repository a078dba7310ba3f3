"""Held-out accuracy of the trained classifier."""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    net = build_model()
    net.load_state_dict(torch.load(args.model, weights_only=True))
    net.eval()
    data = np.load(args.test)
    with torch.no_grad():
        predicted = net(torch.from_numpy(data["x"])).argmax(dim=1).numpy()
    accuracy = float((predicted == data["y"]).mean())
    tmp = f"{args.out}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"accuracy": accuracy, "n_test": int(len(data["y"]))}, f, indent=2)
    os.replace(tmp, args.out)
    print(f"held-out accuracy {accuracy:.4f} on {len(data['y'])} images")


if __name__ == "__main__":
    main()
