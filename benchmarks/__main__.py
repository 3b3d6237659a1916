"""Run every benchmark: ``python -m benchmarks [--quick] [--only NAME ...] [--markdown PATH]``.

Discovers every ``benchmarks/bench_*.py`` module, runs its ``run(quick)`` (each checks
correctness before it times anything) under a progress bar, and prints the rows as tables,
grouped by the rows' ``table`` key (one table per module when rows carry none). A module that
fails is reported and makes the exit status non-zero; the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import pkgutil
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

from ._common import group_rows, print_table  # noqa: E402


def discover() -> list[str]:
    """Names of the benchmark modules (``bench_*``), sorted."""
    here = os.path.dirname(__file__)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))


def machine_summary() -> list[str]:
    """A few lines describing the machine and the library versions."""
    lines = [
        f"python {platform.python_version()}, jax {jax.__version__}, "
        f"device {jax.devices()[0].device_kind}, {os.cpu_count()} logical CPUs"
    ]
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln]
        if model:
            lines.append(f"cpu: {model[0]}")
    except (OSError, subprocess.CalledProcessError):
        lines.append(f"cpu: {platform.processor() or platform.machine()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these modules (e.g. bench_scaling or scaling)",
    )
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables to PATH")
    args = parser.parse_args(argv)

    names = discover()
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {names}")
        names = [n for n in names if n in wanted]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the [bench] extra
        tqdm = None

    results: list[tuple[str, list[dict[str, Any]], float]] = []
    failures: list[tuple[str, str]] = []
    start = time.perf_counter()
    bar = tqdm(names, desc="benchmarks", unit="module", file=sys.stderr) if tqdm else names
    for name in bar:
        if tqdm:
            bar.set_postfix_str(name)  # type: ignore[union-attr]
        t0 = time.perf_counter()
        captured = io.StringIO()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            with contextlib.redirect_stdout(captured):
                rows = module.run(quick=args.quick)
            results.append((name, list(rows), time.perf_counter() - t0))
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failures.append((name, traceback.format_exc()))
    total = time.perf_counter() - start

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print("# infogeo_jax benchmarks" + (" (quick)" if args.quick else ""))
        for line in machine_summary():
            print(f"- {line}")
        for name, rows, seconds in results:
            for title, table in group_rows(rows, name).items():
                print_table(title, table)
            print(f"\n({name}: {seconds:.1f} s)")
        print(f"\nTotal: {total:.1f} s for {len(results)} module(s).")
        for name, tb in failures:
            print(f"\n## FAILED: {name}\n```\n{tb}```")
    text = out.getvalue()
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
