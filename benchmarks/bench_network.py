"""Speed of our generated networks against the same layers executed by a plain, hand-written graph walk.

The reference reuses our module's own layers (same weights, checked to give the same outputs) but
does what a direct implementation does: walks the architecture description with Python dicts on
every call, pools each edge's input separately and sums inputs with torch.stack. The ratio is the
cost of our execution plan relative to that; > 1 means ours is faster. One thread, train mode,
forward + backward, batch 128.

    python benchmarks/bench_network.py [--reps 20]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nago_spec.generator import Edge, HnagConfig, LevelConfig, inner_edges, sample_architecture
from nago_spec.network import build_network


def _walk(graph, in_edges, out_edges, run_node, x):
    """Evaluate one graph level from its description: ``run_node(i, h)`` runs node i on its merged input."""
    outs = {-1: x}
    gate = proj = 0

    def edge_input(e: Edge):
        nonlocal gate, proj
        t = outs[e.src]
        for _ in range(e.steps):
            t = F.avg_pool2d(t, 2, 2, ceil_mode=True)
        if e.kind == "gate":
            t = torch.sigmoid(graph.gate_logits[gate]) * t
            gate += 1
        elif e.kind == "proj":
            t = graph.projections[proj](t)
            proj += 1
        return t

    for i, edges in enumerate(in_edges):
        outs[i] = run_node(i, torch.stack([edge_input(e) for e in edges]).sum(0))
    return torch.stack([edge_input(e) for e in out_edges]).mean(0)


def reference_forward(model, arch, x):
    """The same network computed by walking ``arch`` at call time (no precomputed plan)."""
    def run_cell(i, h):
        cell, mod = arch.cells[i], model.body.nodes[i]

        def run_opgraph(m, hm):
            g, gmod = cell.op_graphs[m], mod.nodes[m]
            return _walk(gmod, [inner_edges(g.dag, b, cell.channels) for b in range(g.dag.n)],
                         [Edge(j, 0, "pass", cell.channels) for j in g.dag.outputs],
                         lambda b, hb: gmod.nodes[b](hb), hm)

        return _walk(mod, [inner_edges(cell.dag, m, cell.channels) for m in range(cell.dag.n)],
                     [Edge(j, 0, "pass", cell.channels) for j in cell.dag.outputs], run_opgraph, h)

    body = _walk(model.body, [arch.top_in_edges(i) for i in range(len(arch.cells))], arch.top_out_edges(),
                 run_cell, model.stem(x))
    return model.head(body)


CASES = {
    "digits-like 8x8, small": (HnagConfig(LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}),
                                          LevelConfig("er", {"nodes": 2, "p": 0.5}),
                                          LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}),
                                          param_budget=20000, head_width=64), (1, 8, 8)),
    "digits-like 8x8, large": (HnagConfig(LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}),
                                          LevelConfig("er", {"nodes": 4, "p": 0.6}),
                                          LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}),
                                          param_budget=20000, head_width=64), (1, 8, 8)),
    "fashion-like 28x28": (HnagConfig(LevelConfig("ws", {"nodes": 5, "k": 4, "p": 0.5}),
                                      LevelConfig("er", {"nodes": 2, "p": 0.5}),
                                      LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}),
                                      param_budget=50000, head_width=128), (1, 28, 28)),
}


def _time(step, reps: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'case':<24} {'ops':>4} {'params':>7} {'ours ms':>8} {'reference ms':>13} {'ratio':>6}")
    for name, (cfg, shape) in CASES.items():
        arch = sample_architecture(cfg, 1, in_channels=shape[0], image_size=shape[1:], num_classes=10)
        model = build_network(arch, 1).train()
        x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model.eval()
            diff = (model(x) - reference_forward(model, arch, x)).abs().max().item()
            model.train()
        if diff > 1e-4:
            raise SystemExit(f"{name}: the reference differs from ours by {diff:.2e}")

        def ours(model=model, x=x):
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

        def reference(model=model, arch=arch, x=x):
            model.zero_grad(set_to_none=True)
            reference_forward(model, arch, x).square().mean().backward()

        t_ours, t_ref = _time(ours, args.reps), _time(reference, args.reps)
        ops = arch.summary()["op_nodes"]
        print(f"{name:<24} {ops:>4} {arch.param_count():>7} {t_ours:>8.1f} {t_ref:>13.1f} {t_ref / t_ours:>6.2f}")


if __name__ == "__main__":
    main()
