"""An energy estimate per inference, a custom cheap objective (used by specs/05_energy_objective.toml)."""

from __future__ import annotations

from typing import Any

#: Energy of one 32-bit float multiply-accumulate (3.7 pJ multiply + 0.9 pJ add) and of one 32-bit
#: DRAM read, in picojoules, at 45 nm (Horowitz, "Computing's energy problem", ISSCC 2014).
PJ_PER_MAC = 4.6
PJ_PER_PARAM_READ = 640.0


def energy(params: dict, ctx: Any) -> float:
    """Energy of one batch-1 inference in microjoules: every MAC once, every weight read once from DRAM.

    Needs only the sampled architecture (``ctx.architecture``), so the objective is cheap.
    """
    arch = ctx.architecture
    picojoules = arch.mac_count() * PJ_PER_MAC + arch.param_count() * PJ_PER_PARAM_READ
    return picojoules * 1e-6
