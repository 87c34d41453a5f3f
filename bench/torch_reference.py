#!/usr/bin/env python3
"""PyTorch reference for `clbench bench`: the same MLPs, batches, optimizer and GRAPES on random
MNIST-shaped data, printing the same JSON lines (kind "train") so the two can be compared side
by side.

    python3 bench/torch_reference.py --threads 2 --seconds 3
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, hidden, grapes):
        super().__init__()
        widths = [784, *hidden, 10]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.grapes = grapes

    def forward(self, x):
        for layer in self.layers[:-1]:
            h = F.relu(layer(x))
            if self.grapes and h.requires_grad:
                # Propagating GRAPES: the error reaching this hidden layer's output is scaled by
                # M = clip(2 I / max I, 1, 2), I = row sums of |W| (recomputed every step).
                with torch.no_grad():
                    importance = layer.weight.abs().sum(dim=1)
                    factors = (2 * importance / importance.max()).clamp(1.0, 2.0)
                h.register_hook(lambda g, m=factors: g * m)
            x = h
        return self.layers[-1](x)


def flop_per_sample(hidden):
    widths = [784, *hidden, 10]
    layers = [a * b for a, b in zip(widths[:-1], widths[1:])]
    forward = sum(2 * m for m in layers)
    return forward + forward + (forward - 2 * layers[0])


def train_throughput(hidden, batch, grapes, seconds, warmup=20):
    torch.manual_seed(0)
    model = MLP(hidden, grapes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(torch.rand(batch, 784), torch.randint(0, 10, (batch,))) for _ in range(8)]

    def step(i):
        x, y = data[i % len(data)]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds or steps < 5:
        step(steps)
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def matmul_peak(n, seconds):
    a = torch.rand(n, n) * 2 - 1
    b = torch.rand(n, n) * 2 - 1
    a @ b
    start = time.perf_counter()
    k = 0
    while time.perf_counter() - start < seconds or k < 2:
        a @ b
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - start) / 1e9


ROUNDS = 9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = max(matmul_peak(2048, args.seconds / 5) for _ in range(5))
    print(json.dumps({"kind": "matmul_peak", "framework": "pytorch", "n": 2048, "threads": args.threads, "gflop_per_s": peak}))
    for hidden, batch in (([256, 256], 64), ([1000, 1000], 128)):
        # Rounds alternate between the two methods; the median round is reported (as clbench does).
        rounds = {False: [], True: []}
        for _ in range(ROUNDS):
            for grapes in (False, True):
                rounds[grapes].append(train_throughput(hidden, batch, grapes, args.seconds / ROUNDS))
        for grapes in (False, True):
            sps = sorted(rounds[grapes])[ROUNDS // 2]
            flop = flop_per_sample(hidden)
            print(json.dumps({
                "kind": "train",
                "framework": "pytorch",
                "torch": torch.__version__,
                "model": "-".join(map(str, [784, *hidden, 10])),
                "batch": batch,
                "method": "sgd+grapes" if grapes else "sgd",
                "threads": args.threads,
                "samples_per_s": sps,
                "flop_per_sample": flop,
                "gflop_per_s": sps * flop / 1e9,
            }))


if __name__ == "__main__":
    main()
