"""``rlvr train [CONFIG] [--key value ...] [--output-dir DIR] [--resume] [--no-mask]``.

With a CONFIG (a YAML file or a bundled config name, see ``rlvr list``) the settings are loaded
over the typed defaults, ``--key value`` pairs override them, ``config.yaml`` is written to the run
directory and the learner registered under ``algorithm`` runs. Without a CONFIG the embedded
default job runs (``rlvr.pipeline.run_default``).

Relative data paths in a config file (``data.train``, ``data.eval``) are read relative to the
config file when they do not exist relative to the working directory, so bundled configs can ship
their own small task files.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a policy (GRPO, PPO, RLOO, REINFORCE, SFT, DPO, RM)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file or bundled config name; omit (or 'default') for the default job")
    p.add_argument("--output-dir", default=None, help="run directory (overrides run.output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--no-mask", action="store_true",
                   help="ablation: train on observation tokens too (rl.mask_observations = false)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=run, accepts_overrides=True)


def _resolve_data_paths(cfg, config_path: Path) -> None:
    from rlvr.data import BUNDLED_TASKS

    for key in ("train", "eval"):
        spec = getattr(cfg.data, key)
        if not spec or spec in BUNDLED_TASKS or Path(spec).exists():
            continue
        beside = config_path.parent / spec
        if beside.exists():
            setattr(cfg.data, key, str(beside))


def run(args) -> int:
    from rlvr.cli import DEFAULT_JOB
    from rlvr.config import dump_config, load_config, resolve_config_path
    from rlvr.pipeline import RECIPE, is_job_recipe, run_default
    from rlvr.registry import ALGORITHMS

    overrides = list(getattr(args, "overrides", []) or [])
    path = RECIPE if args.config in (None, DEFAULT_JOB) else resolve_config_path(args.config)
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
    _resolve_data_paths(cfg, path)
    learner = ALGORITHMS.get(cfg.algorithm)
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
