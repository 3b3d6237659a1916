"""Shared helpers for the benchmarks: timing, peer imports, table printing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax


def time_jitted(
    fn: Callable[..., Any], *args: Any, repeats: int = 5, min_seconds: float = 0.2
) -> tuple[float, float]:
    """Return ``(compile_plus_first_call_s, best_steady_state_s)`` of a jitted ``fn``.

    The best of at least ``repeats`` calls, and of more (up to 2000) until ``min_seconds`` have
    been spent: microsecond-scale calls need many samples on a shared CPU (e.g. while a peer's
    BLAS threads are still spinning).
    """
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best, spent, count = float("inf"), 0.0, 0
    while count < repeats or (spent < min_seconds and count < 2000):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        elapsed = time.perf_counter() - start
        best, spent, count = min(best, elapsed), spent + elapsed, count + 1
    return first, best


def time_call(fn: Callable[..., Any], *args: Any, repeats: int = 3) -> float:
    """Best wall time of a plain (non-JAX) call over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def import_geomstats(backend: str = "autograd"):
    """Import geomstats with the given backend, shimming ``numpy.trapz`` (removed in numpy 2.4).

    Returns the ``geomstats`` module, or ``None`` when it is not installed (``pip install
    .[bench]``). The backend must be chosen before geomstats is first imported.
    """
    import numpy as np

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    os.environ.setdefault("GEOMSTATS_BACKEND", backend)
    try:
        import geomstats  # noqa: F401
        import geomstats.backend  # noqa: F401
    except ImportError:
        return None
    return geomstats


def group_rows(
    rows: list[dict[str, Any]], module: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Split rows into tables by their ``table`` key, which is removed from each row.

    With ``module``, titles read ``"module: table"`` (just ``module`` for rows without a key).
    """
    tables: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        row = dict(row)
        title = row.pop("table", None)
        if module is not None:
            title = f"{module}: {title}" if title else module
        tables.setdefault(str(title), []).append(row)
    return tables


def print_tables(rows: list[dict[str, Any]]) -> None:
    """Print rows as tables grouped by their ``table`` key (a module run on its own)."""
    for title, table in group_rows(rows).items():
        print_table(title, table)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows (dicts with the same keys) as an aligned text table."""
    print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    keys = list(rows[0].keys())
    cells = [[_fmt(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |")


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.4g}"
        return f"{x:.2e}"
    return "" if x is None else str(x)
