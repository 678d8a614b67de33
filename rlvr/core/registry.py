"""Name → object registries for the three extension points: verifiers, environments, algorithms.

A plugin is one function (or class) and one registration: a decorator, or an entry point in the
group ``rlvr.verifiers`` / ``rlvr.environments`` / ``rlvr.algorithms`` of another installed package.
Entry points are discovered at first lookup, never at ``import rlvr``. Duplicate names raise; an
unknown name fails with the list of known ones. A plugin whose entry point cannot be imported is
recorded as broken: asking for its name raises :class:`PluginLoadError` with the import error,
every other name works, and ``rlvr list`` shows it with the reason.

:meth:`Registry.catalog` (what ``rlvr list`` prints) reads the registrations of built-in modules
not imported yet from their source, so listing the learners does not import torch.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import threading
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator

_LOAD_LOCK = threading.RLock()


class PluginLoadError(ImportError):
    """A registered plugin name whose entry point failed to import; the message says why."""


class Registry:
    """One named registry. ``builtin_modules`` are imported on first lookup to register built-ins."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self.builtin_modules = builtin_modules
        self._items: dict[str, Any] = {}
        self._broken: dict[str, str] = {}  # plugin name → why its entry point failed to load
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
                self._load_builtins()
                self._load_plugins()
            finally:
                self._loading = False
            self._loaded = True

    def _load_builtins(self) -> None:
        for mod in self.builtin_modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:  # a built-in module that is not part of this build
                if e.name and mod.startswith(e.name):
                    continue
                raise

    def _load_plugins(self) -> None:
        loaded, self._broken = self._scan_plugins(skip=set(self._items))
        for name, obj in loaded.items():
            self.register(name, obj)

    def _scan_plugins(self, skip: set[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Import each entry point of the group not named in ``skip``: ``(name → object, name → why
        it failed)``. A broken plugin must not break every other name, so failures are kept."""
        loaded: dict[str, Any] = {}
        broken: dict[str, str] = {}
        for ep in entry_points(group=self.group):
            if ep.name in skip:
                continue
            try:
                loaded[ep.name] = ep.load()
            except Exception as e:
                dist = getattr(ep, "dist", None)
                pkg = f" of package {dist.name} {dist.version}" if dist is not None else ""
                broken[ep.name] = (f"{self.kind} plugin {ep.name!r} (entry point {ep.value!r} in "
                                   f"group {self.group!r}{pkg}) failed to load: "
                                   f"{type(e).__name__}: {e}")
        return loaded, broken

    def get(self, name: str) -> Any:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            pass
        if name in self._broken:
            raise PluginLoadError(self._broken[name])
        known = ", ".join(sorted(self._items)) or "(none)"
        broken = f" (broken: {', '.join(sorted(self._broken))})" if self._broken else ""
        raise KeyError(f"unknown {self.kind} {name!r}; known: {known}{broken}") from None

    def names(self) -> list[str]:
        """The names that can be looked up (broken plugins are not among them)."""
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, Any]]:
        self._load()
        return iter(sorted(self._items.items()))

    def broken(self) -> dict[str, str]:
        """Plugin name → why its entry point failed to load."""
        self._load()
        return dict(sorted(self._broken.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def catalog(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(name → description, broken plugin name → reason)`` for listings.

        Entry points are loaded (a broken one is only found so), but a built-in module not imported
        yet is read, not imported: its registrations and their docstrings are found in its source
        (the learners import torch, which takes seconds). A registration the source alone cannot
        describe makes that one module be imported instead."""
        if self._loaded:
            return {n: describe(o) for n, o in sorted(self._items.items())}, self.broken()
        found: dict[str, str] = {}
        for mod in self.builtin_modules:
            static = None if mod in sys.modules else _registrations_in_source(mod, self.kind)
            if static is None:  # imported already, or not describable from its source: import it
                try:
                    importlib.import_module(mod)
                except ModuleNotFoundError as e:
                    if not (e.name and mod.startswith(e.name)):
                        raise
                continue
            found.update(static)
        found.update({n: describe(o) for n, o in self._items.items()})
        loaded, broken = self._scan_plugins(skip=set(found))  # built-ins win, as in a lookup
        found.update({n: describe(o) for n, o in loaded.items()})
        return dict(sorted(found.items())), dict(sorted(broken.items()))


def _registrations_in_source(module: str, kind: str) -> dict[str, str] | None:
    """name → first docstring line of each object that ``module``'s source registers, as a
    decorator ``@<kind>("name")`` / ``@rlvr.<kind>("name")`` or a call ``<kind>("name")(obj)`` whose
    ``obj`` is a function or class of the module or a constructor call with a literal ``summary=``
    (which such objects show as their ``__doc__``). {} when the module is not part of this build;
    None when a registration cannot be described without running the module."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return {}
    if spec is None:
        return {}
    if not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    if f"{kind}(" not in source:
        return {}
    # registrations are module-level statements: decorated definitions, or `X = kind("x")(obj)`
    body = ast.parse(source, spec.origin).body
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    defined = {n.name: n for n in body if isinstance(n, defs)}
    out: dict[str, str] = {}
    for node in body:
        if isinstance(node, defs):
            for dec in node.decorator_list:
                name = _registered_name(dec, kind)
                if name is not None:
                    out[name] = _first_line(ast.get_docstring(node, clean=False))
            continue
        call = getattr(node, "value", None)
        if not (isinstance(node, (ast.Assign, ast.AnnAssign, ast.Expr)) and isinstance(call, ast.Call)):
            continue
        name = _registered_name(call.func, kind)
        if name is None:
            continue
        obj = call.args[0] if call.args else None
        if isinstance(obj, ast.Name) and obj.id in defined:
            out[name] = _first_line(ast.get_docstring(defined[obj.id], clean=False))
            continue
        summary = [k.value for k in getattr(obj, "keywords", ()) if k.arg == "summary"]
        if not (summary and isinstance(summary[0], ast.Constant) and isinstance(summary[0].value, str)):
            return None
        out[name] = _first_line(summary[0].value)
    return out


def _registered_name(node: ast.AST, kind: str) -> str | None:
    """``"x"`` when ``node`` is the call ``<kind>("x")`` or ``<anything>.<kind>("x")``."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return node.args[0].value if called == kind else None


def _first_line(doc: str | None) -> str:
    doc = (doc or "").strip()
    return doc.splitlines()[0] if doc else ""


VERIFIERS = Registry(
    "verifier", "rlvr.verifiers",
    ("rlvr.verifiers.math", "rlvr.verifiers.qa", "rlvr.verifiers.format", "rlvr.verifiers.tool_call",
     "rlvr.verifiers.code", "rlvr.verifiers.bfcl"),
)
ENVIRONMENTS = Registry(
    "environment", "rlvr.environments",
    ("rlvr.environments.calculator", "rlvr.environments.math", "rlvr.environments.search",
     "rlvr.environments.code", "rlvr.environments.tools", "rlvr.environments.bfcl_multi_turn"),
)
ALGORITHMS = Registry(
    "algorithm", "rlvr.algorithms",
    ("rlvr.algorithms.grpo", "rlvr.algorithms.dapo", "rlvr.algorithms.gspo", "rlvr.algorithms.cispo",
     "rlvr.algorithms.rloo", "rlvr.algorithms.reinforce", "rlvr.algorithms.reinforce_pp",
     "rlvr.algorithms.ppo", "rlvr.learners.sft", "rlvr.learners.rm", "rlvr.learners.dpo"),
)


def verifier(name: str, *, check_answer: Callable[[Any], str] | None = None
             ) -> Callable[[Callable], Callable]:
    """Register a verifier ``(completion: str, answer, **info) -> Score`` under ``name``.

    The first line of the function's docstring is its description in ``rlvr list``.
    ``check_answer(answer) -> str``: why no completion can ever be rewarded against this reference
    answer ("" when one can); task loaders call it to refuse such rows up front (it becomes the
    function's ``check_answer`` attribute, which an entry-point plugin may also set itself).
    """
    def add(fn: Callable) -> Callable:
        if check_answer is not None:
            fn.check_answer = check_answer
        return VERIFIERS.register(name)(fn)

    return add


def environment(name: str) -> Callable[[Any], Any]:
    """Register an environment class (see :class:`rlvr.core.environment.Environment`) under ``name``."""
    return ENVIRONMENTS.register(name)


def algorithm(name: str) -> Callable[[Any], Any]:
    """Register a learner entry ``run(config, output_dir) -> dict`` under ``name``."""
    return ALGORITHMS.register(name)


def describe(obj: Any) -> str:
    """The first line of an object's docstring, for listings."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
