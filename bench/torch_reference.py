#!/usr/bin/env python3
"""PyTorch reference for `clbench bench`: the same MLPs and CNNs, batches, optimizer and GRAPES on
random MNIST-shaped data, printing the same JSON lines (kind "train") so the two can be compared
side by side.

    python3 bench/torch_reference.py --threads 2 --seconds 3 [--models mlp|cnn|all]
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


class CNN(nn.Module):
    """clbench's CNN: [conv 5x5 -> ReLU -> 2x2 max-pool] x 2, then Linear(c2*4*4, hidden) -> ReLU
    -> Linear(hidden, 10). Propagating GRAPES scales the error reaching each hidden layer's output
    by its factors: per output channel for a convolution (I = sums of |W| over the channel's
    c_in*5*5 weights), per node for the linear layer."""

    def __init__(self, channels, hidden, grapes):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc = nn.Linear(c2 * 16, hidden)
        self.out = nn.Linear(hidden, 10)
        self.grapes = grapes

    def modulate(self, h, weight):
        if self.grapes and h.requires_grad:
            with torch.no_grad():
                importance = weight.abs().flatten(1).sum(dim=1)
                factors = (2 * importance / importance.max()).clamp(1.0, 2.0)
            shape = (1, -1) + (1,) * (h.dim() - 2)
            h.register_hook(lambda g, m=factors.view(shape): g * m)
        return h

    def forward(self, x):
        x = x.view(-1, 1, 28, 28)
        x = F.max_pool2d(self.modulate(F.relu(self.conv1(x)), self.conv1.weight), 2)
        x = F.max_pool2d(self.modulate(F.relu(self.conv2(x)), self.conv2.weight), 2)
        x = self.modulate(F.relu(self.fc(x.flatten(1))), self.fc.weight)
        return self.out(x)


def cnn_flop_per_sample(channels, hidden):
    """Counted as clbench counts it: 2 FLOP per multiply-add of every convolution and linear layer
    forward, the same for every weight gradient, again for the error passed down (not below the
    first layer); pooling and activations not counted."""
    layers, side, c_in = [], 28, 1
    for c_out in channels:
        s = side - 4
        layers.append(c_out * c_in * 25 * s * s)
        side, c_in = s // 2, c_out
    layers += [c_in * side * side * hidden, hidden * 10]
    forward = sum(2 * m for m in layers)
    return forward + forward + (forward - 2 * layers[0])


def flop_per_sample(hidden):
    widths = [784, *hidden, 10]
    layers = [a * b for a, b in zip(widths[:-1], widths[1:])]
    forward = sum(2 * m for m in layers)
    return forward + forward + (forward - 2 * layers[0])


WINDOW_PARTS = 5


def train_throughput(make_model, batch, grapes, seconds, warmup=20):
    torch.manual_seed(0)
    model = make_model(grapes)
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
    # The median rate of WINDOW_PARTS equal parts of the window, as `clbench bench` measures
    # (src/bench.rs, WINDOW_PARTS): a burst of a shared host's drift inside one part does not
    # move it.
    done = 0
    rates = []
    for _ in range(WINDOW_PARTS):
        start = time.perf_counter()
        steps = 0
        while time.perf_counter() - start < seconds / WINDOW_PARTS or steps < 2:
            step(done + steps)
            steps += 1
        rates.append(steps * batch / (time.perf_counter() - start))
        done += steps
    return sorted(rates)[WINDOW_PARTS // 2]


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
    p.add_argument("--models", choices=["mlp", "cnn", "all"], default="all")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = max(matmul_peak(2048, args.seconds / 5) for _ in range(5))
    print(json.dumps({"kind": "matmul_peak", "framework": "pytorch", "n": 2048, "threads": args.threads, "gflop_per_s": peak}))
    models = []
    if args.models != "cnn":
        for hidden, batch in (([256, 256], 64), ([256, 256], 10), ([1000, 1000], 128)):
            name = "-".join(map(str, [784, *hidden, 10]))
            models.append((name, batch, lambda g, h=hidden: MLP(h, g), flop_per_sample(hidden)))
    if args.models != "mlp":
        for channels in ([8, 16], [16, 32]):
            name = f"cnn-{channels[0]}-{channels[1]}-128"
            models.append((name, 128, lambda g, c=channels: CNN(c, 128, g), cnn_flop_per_sample(channels, 128)))
    for name, batch, make_model, flop in models:
        # Rounds alternate between the two methods; the median round is reported (as clbench does).
        rounds = {False: [], True: []}
        for _ in range(ROUNDS):
            for grapes in (False, True):
                rounds[grapes].append(train_throughput(make_model, batch, grapes, args.seconds / ROUNDS))
        for grapes in (False, True):
            sps = sorted(rounds[grapes])[ROUNDS // 2]
            print(json.dumps({
                "kind": "train",
                "framework": "pytorch",
                "torch": torch.__version__,
                "model": name,
                "batch": batch,
                "method": "sgd+grapes" if grapes else "sgd",
                "threads": args.threads,
                "samples_per_s": sps,
                "flop_per_sample": flop,
                "gflop_per_s": sps * flop / 1e9,
            }))


if __name__ == "__main__":
    main()
