"""``rlvr list``: registered environments, verifiers, algorithms and bundled configs.

It answers without importing torch: built-in entries are described from their source (see
:meth:`rlvr.core.registry.Registry.catalog`). A plugin whose entry point fails to import is listed as
broken, with the import error.
"""

from __future__ import annotations

import json
from pathlib import Path

#: prefix of a broken plugin's description
BROKEN = "BROKEN: "


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="registered environments, verifiers, algorithms and configs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.core.registry import ALGORITHMS, ENVIRONMENTS, VERIFIERS

    table: dict[str, dict[str, str]] = {}
    for section, registry in (("environments", ENVIRONMENTS), ("verifiers", VERIFIERS),
                              ("algorithms", ALGORITHMS)):
        described, broken = registry.catalog()
        table[section] = {**described, **{n: BROKEN + why for n, why in broken.items()}}
    table["configs"] = {p.stem: _first_comment(p) for p in sorted(bundled_configs().glob("*.yaml"))}
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


def bundled_configs() -> Path:
    """``rlvr.core.config.BUNDLED_CONFIGS``, found without importing rlvr.core.config (omegaconf, yaml)."""
    import importlib.util

    spec = importlib.util.find_spec("rlvr")
    return Path(spec.origin).parent / "configs"


def _first_comment(path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
