"""``rlvr list``: registered environments, verifiers, algorithms and bundled configs."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="registered environments, verifiers, algorithms and configs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.config import BUNDLED_CONFIGS
    from rlvr.registry import ALGORITHMS, ENVIRONMENTS, VERIFIERS, describe

    table = {
        "environments": {n: describe(o) for n, o in ENVIRONMENTS.items()},
        "verifiers": {n: describe(o) for n, o in VERIFIERS.items()},
        "algorithms": {n: describe(o) for n, o in ALGORITHMS.items()},
        "configs": {p.stem: _first_comment(p) for p in sorted(BUNDLED_CONFIGS.glob("*.yaml"))},
    }
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for section, items in table.items():
        print(f"{section}:")
        width = max((len(n) for n in items), default=0)
        for name, desc in items.items():
            print(f"  {name:<{width}}  {desc}")
        if not items:
            print("  (none)")
    return 0


def _first_comment(path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
