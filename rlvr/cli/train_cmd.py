"""``rlvr train [CONFIG] [--key value ...] [--output-dir DIR] [--resume] [--no-mask]``.

With a CONFIG (a YAML file or a bundled config name, see ``rlvr list``) the settings are loaded
over the typed defaults, ``--key value`` pairs override them, ``config.yaml`` is written to the run
directory and the learner registered under ``algorithm`` runs. Without a CONFIG the embedded
default job runs (``rlvr.jobs.search_world.pipeline.run_default``).

Relative data paths in a config file (``data.train``, ``data.eval``) are read relative to the
config file when they do not exist relative to the working directory, so bundled configs can ship
their own small task files. A data path that exists in neither place is refused naming its key
(``data.train: no such file 'x.jsonl'``) before any model loads.

``--print-config`` prints the merged, typed settings (CONFIG ← ``--key value``) as YAML, each under
its docstring as a comment, and exits; the output is itself a valid CONFIG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: the setting groups ``--help`` lists; a test checks them against TrainConfig's sections
GROUPS = {
    "model": "policy weights, tokenizer, precision, LoRA",
    "data": "training and evaluation prompts (file, hf:owner/name[:split], bundled name)",
    "env": "environment name, its verifiers and settings",
    "reward": "verifier weights beside reward models",
    "rollout": "samples per prompt, turn and token budgets, sampling, engine",
    "optim": "learning rate, schedule, clipping, micro-batch size",
    "rl": "on-policy algorithm knobs (clip, KL, advantages, loss aggregation, PPO critic)",
    "pref": "DPO / reward-model / SFT knobs",
    "run": "output directory, steps, seed, evaluation and checkpoint cadence, device, logging",
}

EPILOG = ("settings: --GROUP.KEY VALUE on the command line, or GROUP.KEY: VALUE in CONFIG.\n"
          "groups (besides the top-level 'algorithm'):\n"
          + "".join(f"  {name:<9}{what}\n" for name, what in GROUPS.items())
          + "\nrlvr train [CONFIG] --print-config [--key value ...] prints every setting of the "
            "merged config with its meaning.")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a policy (GRPO, PPO, RLOO, REINFORCE, SFT, DPO, RM)",
                       description=__doc__.split("\n\n")[0], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file or bundled config name; omit (or 'default') for the default job")
    p.add_argument("--output-dir", default=None, help="run directory (overrides run.output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--no-mask", action="store_true",
                   help="ablation: train on observation tokens too (rl.mask_observations = false)")
    p.add_argument("--print-config", nargs="?", const=True, default=False, metavar="CONFIG",
                   help="print the merged settings with each one's meaning as YAML comments, "
                        "and exit (no training)")
    p.add_argument("--plan", action="store_true",
                   help="print the per-GPU memory estimate (weights, gradients, optimizer state, "
                        "activations, engine) for this config and world size, and exit; exit "
                        "status 1 when it does not fit --gpu-memory-gb")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0,
                   help="with --plan: the memory of one GPU (default 80)")
    p.add_argument("--world-size", type=int, default=None,
                   help="with --plan: training ranks (default $WORLD_SIZE, else 1)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=run, accepts_overrides=True)


def _resolve_data_paths(cfg, config_path: Path) -> None:
    """Relative data paths are read beside the config file when not found here; a file found in
    neither place is refused naming its key."""
    from rlvr.data.preferences import BUNDLED
    from rlvr.data.tasks import BUNDLED_TASKS

    for key in ("train", "eval"):
        spec = getattr(cfg.data, key)
        if (not spec or spec in BUNDLED_TASKS or spec in BUNDLED or spec.startswith("hf:")
                or Path(spec).exists()):
            continue
        beside = config_path.parent / spec
        if beside.exists():
            setattr(cfg.data, key, str(beside))
            continue
        also = "" if Path(spec).is_absolute() else f" (nor {beside})"
        bundled = ", ".join(sorted({*BUNDLED_TASKS, *BUNDLED}))
        raise FileNotFoundError(f"data.{key}: no such file {spec!r}{also}; expected a file, "
                                f"hf:owner/name[:split] or a bundled name ({bundled})")


def config_text(cfg) -> str:
    """A config dataclass as YAML, every field under its docstring as a ``#`` comment."""
    lines: list[str] = []
    _emit(cfg, "", lines)
    return "\n".join(lines) + "\n"


def _emit(obj, pad: str, lines: list[str]) -> None:
    import dataclasses
    import textwrap

    docs = field_docs(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        doc = docs.get(f.name) or (field_docs(type(value)).get("") if dataclasses.is_dataclass(value)
                                   else "")
        for line in textwrap.wrap(doc or "", width=max(40, 98 - len(pad))):
            lines.append(f"{pad}# {line}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            _emit(value, pad + "  ", lines)
        else:
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}")


def _yaml_value(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def field_docs(cls) -> dict[str, str]:
    """Field name → the docstring written under it in the class body (subclasses' first), one
    paragraph; ``""`` → the class's own docstring. Read from the source with ``ast``: dataclasses
    keep no field docstrings at run time."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if k is not object]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for i, node in enumerate(body):
            nxt = body[i + 1] if i + 1 < len(body) else None
            is_doc = (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                      and isinstance(nxt.value.value, str))
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
                docs[node.target.id] = " ".join(nxt.value.value.split())
        own = ast.get_docstring(tree.body[0]) if body else None
        if klass is cls or own:
            docs[""] = " ".join((own or "").split())
    return docs


def run(args) -> int:
    from rlvr.cli import DEFAULT_JOB
    from rlvr.core.config import dump_config, load_config, resolve_config_path
    from rlvr.jobs.search_world.pipeline import RECIPE, is_job_recipe, run_default
    from rlvr.learners.dispatch import learner_for

    overrides = list(getattr(args, "overrides", []) or [])
    config = args.print_config if isinstance(args.print_config, str) else args.config
    path = RECIPE if config in (None, DEFAULT_JOB) else resolve_config_path(config)
    if args.print_config:
        return _print_config(path, overrides, args)
    if is_job_recipe(path):  # the default job, `rlvr train search_world`, or an edited copy
        return int(run_default(args.output_dir, overrides, args.no_mask, resume=args.resume,
                               recipe=path) or 0)
    if args.output_dir:
        overrides += ["--run.output_dir", args.output_dir]
    if args.resume:
        overrides += ["--run.resume", "true"]
    if args.no_mask:
        overrides += ["--rl.mask_observations", "false"]
    cfg = load_config(path, overrides)
    if args.plan:
        from rlvr.learners.distributed import launched_world_size
        from rlvr.learners.plan import format_plan

        text, fits = format_plan(cfg, args.world_size or launched_world_size(), args.gpu_memory_gb)
        print(text)
        return 0 if fits else 1
    _resolve_data_paths(cfg, path)
    learner = learner_for(cfg.algorithm)
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (cfg.run.resume and (out / "config.yaml").exists()):
        dump_config(cfg, out / "config.yaml")
    result = learner(cfg)
    if isinstance(result, dict):
        summary = result.get("eval") or {k: v for k, v in (result.get("final") or {}).items()
                                         if k.startswith("reward/")}
        print(json.dumps({"output_dir": str(out), **summary}, default=str))
    return 0


def _print_config(path: Path, overrides: list[str], args) -> int:
    from rlvr.core.config import load_config
    from rlvr.jobs.search_world.pipeline import is_job_recipe, load_job_config

    if is_job_recipe(path):
        cfg = load_job_config(overrides, args.output_dir, args.no_mask, recipe=path)
    else:
        extra = ["--run.output_dir", args.output_dir] if args.output_dir else []
        cfg = load_config(path, overrides + extra + (["--rl.mask_observations", "false"]
                                                    if args.no_mask else []))
    print(f"# {path} with {' '.join(overrides) or 'no overrides'}")
    print(config_text(cfg), end="")
    return 0
