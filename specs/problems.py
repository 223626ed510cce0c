"""Black-box test problems for plain-parameter specs (used by specs/01_params_zdt1.toml)."""

from __future__ import annotations

import math


def zdt1(params: dict) -> dict:
    """ZDT1 (Zitzler, Deb, Thiele 2000) on the parameters x1..xn in [0, 1]; both minimised."""
    x = [params[k] for k in sorted(params)]
    f1 = x[0]
    g = 1.0 + 9.0 * sum(x[1:]) / (len(x) - 1)
    return {"f1": f1, "f2": g * (1.0 - math.sqrt(f1 / g))}
