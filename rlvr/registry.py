"""Name → object registries for the three extension points: verifiers, environments, algorithms.

A plugin is one function (or class) and one registration: a decorator, or an entry point in the
group ``rlvr.verifiers`` / ``rlvr.environments`` / ``rlvr.algorithms`` of another installed package.
Entry points are discovered at first lookup, never at ``import rlvr``. Duplicate names raise; an
unknown name fails with the list of known ones.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator


_LOAD_LOCK = threading.RLock()


class Registry:
    """One named registry. ``builtin_modules`` are imported on first lookup to register built-ins."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self.builtin_modules = builtin_modules
        self._items: dict[str, Any] = {}
        self._loaded = False
        self._loading = False

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(o: Any) -> Any:
            old = self._items.get(name)
            if old is not None and old is not o:
                where = getattr(old, "__module__", "?")
                raise ValueError(f"{self.kind} {name!r} is already registered (by {where})")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def _load(self) -> None:
        if self._loaded:
            return
        with _LOAD_LOCK:  # threads looking up at once (a pool of scorers) wait for one load
            if self._loaded or self._loading:
                return
            self._loading = True  # a built-in that looks names up while importing sees a partial table
            try:
                self._load_all()
            finally:
                self._loading = False
            self._loaded = True

    def _load_all(self) -> None:
        for mod in self.builtin_modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:  # a built-in whose optional dependency is missing
                if e.name and mod.startswith(e.name):
                    continue
                raise
        for ep in entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as e:  # a broken plugin must not break every other name
                raise RuntimeError(
                    f"{self.kind} plugin {ep.name!r} (entry point {ep.value!r} in group "
                    f"{self.group!r}) failed to load: {e}"
                ) from e
            self.register(ep.name, obj)

    def get(self, name: str) -> Any:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, Any]]:
        self._load()
        return iter(sorted(self._items.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


VERIFIERS = Registry(
    "verifier", "rlvr.verifiers",
    ("rlvr.verifiers.math", "rlvr.verifiers.qa", "rlvr.verifiers.format", "rlvr.verifiers.tool_call",
     "rlvr.verifiers.code"),
)
ENVIRONMENTS = Registry(
    "environment", "rlvr.environments",
    ("rlvr.environments.calculator", "rlvr.environments.math", "rlvr.environments.search",
     "rlvr.environments.code"),
)
ALGORITHMS = Registry(
    "algorithm", "rlvr.algorithms",
    ("rlvr.learners.grpo", "rlvr.learners.ppo", "rlvr.learners.rloo", "rlvr.learners.reinforce",
     "rlvr.learners.sft", "rlvr.learners.rm", "rlvr.learners.dpo"),
)


def verifier(name: str) -> Callable[[Callable], Callable]:
    """Register a verifier ``(completion: str, answer, **info) -> Score`` under ``name``.

    The first line of the function's docstring is its description in ``rlvr list``.
    """
    return VERIFIERS.register(name)


def environment(name: str) -> Callable[[Any], Any]:
    """Register an environment class (see :class:`rlvr.environment.Environment`) under ``name``."""
    return ENVIRONMENTS.register(name)


def algorithm(name: str) -> Callable[[Any], Any]:
    """Register a learner entry ``run(config, output_dir) -> dict`` under ``name``."""
    return ALGORITHMS.register(name)


def describe(obj: Any) -> str:
    """The first line of an object's docstring, for listings."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
