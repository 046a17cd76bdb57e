"""The operating point, calibration and bootstrap intervals of a model as text lines, one
wording for the run summary (``medflow run``) and the dashboard's models page.

The inputs are the JSON forms the Trainer writes (``training.json``'s ``trust``) and the
Pusher copies into the model contract (``calibration``, ``operating_point`` and
``metrics.eval_intervals``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "?"


def trust_lines(
    calibration: Mapping[str, Any] | None,
    operating_point: Mapping[str, Any] | None,
    intervals: Mapping[str, Any] | None,
) -> list[str]:
    """Lines such as ``operating point youden: cut-off 0.4123 (sensitivity 0.912, ...)``;
    empty when nothing is recorded."""
    lines = []
    point = operating_point or {}
    if "threshold" in point:
        gave = ("sensitivity", "specificity") if "sensitivity" in point else ("dice",)
        lines.append(
            f"operating point {point.get('rule', '?')}: cut-off {point['threshold']:.4f} "
            f"(on {point.get('split', 'eval')}: "
            + ", ".join(f"{name} {_num(point.get(name))}" for name in gave)
            + ")"
        )
    cal = calibration or {}
    if cal.get("method"):
        params = ", ".join(
            f"{k}={v:.4g}" for k, v in (cal.get("params") or {}).items() if isinstance(v, float)
        )
        text = f"calibration {cal['method']}" + (f" ({params})" if params else "")
        before, after = cal.get("before") or {}, cal.get("after") or {}
        if "ece" in before and "ece" in after:
            text += (
                f": ECE {before['ece']:.3f} -> {after['ece']:.3f}, Brier "
                f"{before.get('brier', 0):.3f} -> {after.get('brier', 0):.3f} "
                f"({cal.get('judged_on', 'out of sample')})"
            )
        lines.append(text)
        if cal.get("note"):
            lines.append(f"  note: {cal['note']}")
    found = intervals or {}
    metrics = found.get("metrics") or {}
    if metrics:
        at = f"; PPV/NPV at prevalence {_num(found['prevalence'])}" if "prevalence" in found else ""
        lines.append(
            f"{found.get('level', 0.95):.0%} intervals ({found.get('resampling', 'patient')}-level "
            f"bootstrap on {found.get('split', 'eval')}{at}):"
        )
        lines += [
            f"  {name} {_num(m.get('value'))} [{_num(m.get('lower'))}, {_num(m.get('upper'))}]"
            for name, m in metrics.items()
        ]
    return lines
