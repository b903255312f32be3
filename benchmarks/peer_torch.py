"""PyTorch side of `npm run bench:peer`: the same workloads as benchmarks/peer.ts on one CPU thread.

Prints one JSON object: samples per wall second (and, under `cpu`, per CPU second) for the dense net (batch 64), the small CNN (batch 32) and one
FedAvg round of the Fashion-MNIST MLP cell. Run by peer.ts with Debian's /usr/bin/python3.
"""
import json
import sys
import time

import torch
from torch import nn

torch.set_num_threads(1)
torch.manual_seed(1)
budget = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0


def dense():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def mlp():
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def step(model, opt, x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()


def throughput(make, shape, batch):
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    for _ in range(2):
        step(model, opt, x, y)
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < budget and steps < 2000:
        step(model, opt, x, y)
        steps += 1
    return steps * batch / (time.perf_counter() - t0), steps * batch / (time.process_time() - c0)


def fedavg_round(sites, per_site, batch):
    """Each site trains a fresh copy of the global MLP for one epoch with Adam, then the weights are averaged."""
    glob = mlp()
    data = [(torch.rand(per_site, 784), torch.randint(0, 10, (per_site,))) for _ in range(sites)]
    t0, c0 = time.perf_counter(), time.process_time()
    states = []
    for x, y in data:
        model = mlp()
        model.load_state_dict(glob.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(0, per_site, batch):
            step(model, opt, x[i:i + batch], y[i:i + batch])
        states.append(model.state_dict())
    glob.load_state_dict({k: sum(s[k] for s in states) / sites for k in states[0]})
    return sites * per_site / (time.perf_counter() - t0), sites * per_site / (time.process_time() - c0)


sites, per_site = int(sys.argv[2]), int(sys.argv[3])
dense_rate = throughput(dense, (784,), 64)
cnn_rate = throughput(cnn, (1, 28, 28), 32)
fedavg_rate = max(fedavg_round(sites, per_site, 32) for _ in range(3))
# Samples per wall second, and per CPU second of this process (less moved by other load on the machine).
print(json.dumps({
    "dense": dense_rate[0], "cnn": cnn_rate[0], "fedavg": fedavg_rate[0],
    "cpu": {"dense": dense_rate[1], "cnn": cnn_rate[1], "fedavg": fedavg_rate[1]},
    "torch": torch.__version__,
}))
