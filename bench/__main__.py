"""`python -m bench <scenario> [options]` (or `make bench`): Traversion's benchmarks.

A scenario is a module `bench/<name>.py` (names starting with `_` are helpers) whose
docstring's first line describes it and which defines:

    def add_arguments(parser: argparse.ArgumentParser) -> None   # optional
    def run(args: argparse.Namespace) -> int                      # prints its table

`python -m bench list` lists them; `python -m bench all` runs every one in turn with its
default options. Each scenario prepares its own data (bench/_support.py has helpers for
a fresh database, gunicorn servers and a load generator) and prints its figure last.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent


def scenarios() -> dict[str, ModuleType]:
    """Every bench/<name>.py with a run() function, by name."""
    found = {}
    for module in pkgutil.iter_modules([str(PACKAGE_DIR)]):
        if module.name.startswith("_"):
            continue
        imported = importlib.import_module(f"bench.{module.name}")
        if callable(getattr(imported, "run", None)):
            found[module.name] = imported
    return dict(sorted(found.items()))


def summary(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def build_parser(available: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    sub.add_parser("list", help="list the scenarios")
    sub.add_parser("all", help="run every scenario with its defaults")
    for name, module in available.items():
        scenario_parser = sub.add_parser(name, help=summary(module), description=module.__doc__)
        if hasattr(module, "add_arguments"):
            module.add_arguments(scenario_parser)
    return parser


def run_one(name: str, module: ModuleType, args: argparse.Namespace) -> int:
    print(f"\n== {name}: {summary(module)}", flush=True)
    started = time.monotonic()
    code = module.run(args)
    print(f"== {name} finished in {time.monotonic() - started:.1f} s (exit {code})", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(PACKAGE_DIR.parent))
    available = scenarios()
    parser = build_parser(available)
    args = parser.parse_args(argv)
    if args.scenario == "list":
        for name, module in available.items():
            print(f"{name:24} {summary(module)}")
        return 0
    if args.scenario == "all":
        worst = 0
        for name, module in available.items():
            defaults = build_parser(available).parse_args([name])
            worst = max(worst, run_one(name, module, defaults))
        return worst
    return run_one(args.scenario, available[args.scenario], args)


if __name__ == "__main__":
    sys.exit(main())
