"""Training speed of generated networks against the same layers in a plain, hand-written module.

The reference is what a person writes by hand for one fixed architecture: a module whose forward is
straight-line code, one statement per merge term and per node (``v7 = torch.addcmul(v6, v3, g[1])``,
``v8 = self.c0m1b3(v7)``), with no graph, no loop and no plan. We generate that source from the
architecture description (independently of network.Graph's execution plan) and bind it to our
module's own layers, so both compute the same function with the same weights; outputs are checked
equal before timing. Gated sums use the same fused arithmetic as ours (addcmul), so the ratio
measures the cost of walking the graph alone; written naively as ``g0 * a + g1 * b``, the
hand-written module is up to twice as slow on narrow, many-op networks.

Each step is one SGD training step (zero_grad, forward, cross-entropy, backward, step) at batch 128
on 28x28x1 input, in a training worker's setting (nago_spec.runners.worker.init_worker: one torch thread,
freed memory kept by malloc). Ours and the reference alternate step by step; the table shows
the median step time, images per second, and the ratio ours / reference in images per second
(>= 0.9 is the goal: at most 10 % overhead).

    python benchmarks/bench_network.py [--steps 30] [--batch 128]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nago_spec.generator import (
    Architecture,
    HnagConfig,
    LevelConfig,
    Merge,
    outputs_merge,
    sample_architecture,
)
from nago_spec.network import build_network
from nago_spec.runners.worker import init_worker

SHAPE = (1, 28, 28)

CASES = {
    # 3 cells x 1 node x 4 ops = 12 ops
    "small (~10 ops)": HnagConfig(LevelConfig("ws", {"nodes": 3, "k": 2, "p": 0.5}),
                                  LevelConfig("er", {"nodes": 1, "p": 0.5}),
                                  LevelConfig("ws", {"nodes": 4, "k": 2, "p": 0.5}),
                                  param_budget=50_000, head_width=128),
    # 6 cells x 5 nodes x 10 ops = 300 ops
    "large (~300 ops)": HnagConfig(LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}),
                                   LevelConfig("er", {"nodes": 5, "p": 0.5}),
                                   LevelConfig("ws", {"nodes": 10, "k": 4, "p": 0.5}),
                                   param_budget=50_000, head_width=128),
    # the AugV1 knobs: every merge kind and every operation, 5 x 3 x 6 = 90 ops
    "extended (~90 ops)": HnagConfig(
        LevelConfig("ws", {"nodes": 5, "k": 4, "p": 0.5}, {"sum": 1, "concat": 1, "attention": 1}),
        LevelConfig("er", {"nodes": 3, "p": 0.7}, {"sum": 1, "concat": 1, "attention": 1}),
        LevelConfig("ws", {"nodes": 6, "k": 4, "p": 0.5}, {"sum": 1, "concat": 1, "attention": 1}),
        param_budget=50_000, head_width=128,
        ops={"conv3x3": 2, "conv5x5": 1, "conv1x1": 1, "conv3x1": 1, "conv1x3": 1, "avgpool3x3": 1, "avgpool5x5": 1}),
}


class _Writer:
    """Emits the straight-line forward of one architecture, naming each layer of ``model`` as an attribute."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.lines: list[str] = []
        self.layers: dict[str, nn.Module | nn.Parameter] = {}
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def emit(self, expr: str) -> str:
        v = self.var()
        self.lines.append(f"    {v} = {expr}")
        return v

    def layer(self, name: str, module: nn.Module | nn.Parameter) -> str:
        self.layers[name] = module
        return f"self.{name}"

    def graph(self, prefix: str, gmod: nn.Module, merges: Sequence[Merge], out: Merge,
              node: Callable[[int, str], str], x: str) -> str:
        """Emit one graph level; ``node(i, h)`` emits node i on input variable ``h`` and returns its output."""
        gates = None
        if gmod.gate_logits is not None:
            gates = self.emit(f"torch.sigmoid({self.layer(prefix + 'gates', gmod.gate_logits)}).unbind(0)")
        pooled: dict[tuple[int, int], str] = {}
        outs = {-1: x}
        counters = {"gate": 0, "proj": 0}

        def source(src: int, steps: int) -> str:
            if steps == 0:
                return outs[src]
            if (src, steps) not in pooled:
                pooled[(src, steps)] = self.emit(f"F.avg_pool2d({source(src, steps - 1)}, 2, 2, ceil_mode=True)")
            return pooled[(src, steps)]

        def term(e) -> str:
            v = source(e.src, e.steps)
            if e.kind == "gate":
                k = counters["gate"]
                counters["gate"] += 1
                return f"{gates}[{k}] * {v}"
            if e.kind == "proj":
                k = counters["proj"]
                counters["proj"] += 1
                return f"{self.layer(f'{prefix}p{k}', gmod.projections[k])}({v})"
            return v

        def merge(mg: Merge) -> str:
            terms = [term(e) for e in mg.edges]
            if mg.kind == "pass":
                return terms[0]
            if mg.kind == "sum":  # gated terms fused as torch.addcmul, the arithmetic ours does
                h = None
                for e, t in zip(mg.edges, terms):
                    if e.kind == "gate" and h is not None:
                        gate, value = t.split(" * ")
                        h = self.emit(f"torch.addcmul({h}, {value}, {gate})")
                    else:
                        h = self.emit(t if h is None else f"{h} + {t}")
                return h
            if mg.kind == "concat":
                return self.emit(f"torch.cat([{', '.join(terms)}], 1)")
            if mg.kind == "mean":
                return terms[0] if len(terms) == 1 else self.emit(f"({' + '.join(terms)}) * {1 / len(terms)!r}")
            first = self.emit(terms[0])  # attention
            gate = counters["gate"]
            counters["gate"] += 1
            flat = self.emit(f"{first}.flatten(1)")
            lo = self.emit(f"{flat}.amin(1).view(-1, 1, 1, 1)")
            hi = self.emit(f"{flat}.amax(1).view(-1, 1, 1, 1)")
            s = self.emit(" + ".join(terms[1:]))
            return self.emit(f"{s} * (({first} - {lo}) / ({hi} - {lo}).clamp_min(1e-6) + {gates}[{gate}])")

        for i, mg in enumerate(merges):
            outs[i] = node(i, merge(mg))
        return merge(out)


def hand_written(model: nn.Module, arch: Architecture) -> nn.Module:
    """A module with the same layers as ``model`` and a generated straight-line forward."""
    w = _Writer(model)
    x = w.emit(f"{w.layer('stem', model.stem)}(x)")

    def cell(i: int, h: str) -> str:
        c, cmod = arch.cells[i], model.body.nodes[i]
        plan = list(arch.cell_merges(i))

        def op_graph(m: int, hm: str) -> str:
            g, gmod = c.op_graphs[m], cmod.nodes[m]
            return w.graph(f"c{i}m{m}", gmod, plan[m][1], outputs_merge(g.dag, c.channels),
                           lambda b, hb: w.emit(f"{w.layer(f'c{i}m{m}b{b}', gmod.nodes[b])}({hb})"), hm)

        return w.graph(f"c{i}", cmod, [mm for mm, _ in plan], outputs_merge(c.dag, c.channels), op_graph, h)

    body = w.graph("top", model.body, [arch.top_merge(i) for i in range(len(arch.cells))], arch.top_out_merge(),
                   cell, x)
    w.lines.append(f"    return {w.layer('head', model.head)}({body})")
    source = "def forward(self, x):\n" + "\n".join(w.lines) + "\n"
    namespace: dict = {"torch": torch, "F": F}
    exec(compile(source, f"<hand-written {arch.summary()['op_nodes']} ops>", "exec"), namespace)

    class HandWritten(nn.Module):
        forward = namespace["forward"]

    ref = HandWritten()
    for name, layer in w.layers.items():
        if isinstance(layer, nn.Parameter):
            ref.register_parameter(name, layer)
        else:
            ref.add_module(name, layer)
    ref.source = source
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    init_worker()  # one thread, and the allocator setting every training worker runs with
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *SHAPE, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    print(f"batch {args.batch}, input {'x'.join(map(str, SHAPE))}, 1 thread, median of {args.steps} steps")
    print(f"{'case':<20} {'ops':>4} {'params':>7} {'ours ms':>8} {'hand ms':>8} {'ours img/s':>10} "
          f"{'hand img/s':>10} {'ours/hand':>9}")
    for name, cfg in CASES.items():
        arch = sample_architecture(cfg, 1, in_channels=SHAPE[0], image_size=SHAPE[1:], num_classes=10)
        model = build_network(arch, 1)
        ref = hand_written(model, arch)
        model.eval()
        with torch.no_grad():
            diff = (model(x) - ref(x)).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"{name}: the hand-written module differs from ours by {diff:.2e}")
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(module: nn.Module) -> float:
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(module(x), y).backward()
            opt.step()
            return time.perf_counter() - t

        for _ in range(3):
            step(model), step(ref)
        times: dict[str, list[float]] = {"ours": [], "hand": []}
        for _ in range(args.steps):
            times["ours"].append(step(model))
            times["hand"].append(step(ref))
        ours, hand = (statistics.median(times[k]) for k in ("ours", "hand"))
        print(f"{name:<20} {arch.summary()['op_nodes']:>4} {arch.param_count():>7} {ours * 1e3:>8.1f} "
              f"{hand * 1e3:>8.1f} {args.batch / ours:>10.0f} {args.batch / hand:>10.0f} {hand / ours:>9.3f}")


if __name__ == "__main__":
    main()
