"""The elastic example's evaluation: the trained model's loss on the whole data set, and the runs it took."""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import problem  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--runs", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()
net = problem.model()
net.load_state_dict(torch.load(args.model, weights_only=True))
x, y = problem.data()
with torch.no_grad():
    loss = problem.loss(net, x, y).item()
runs = json.loads(Path(args.runs).read_text())
Path(args.out).write_text(json.dumps({"loss": loss, "world_sizes": [r["world_size"] for r in runs]}, indent=1) + "\n")
