"""The embedded default job: ``rlvr train`` with no config.

The Search-R1 recipe in miniature, on CPU, with nothing downloaded:

1. **World**: a seeded fictional world (:mod:`rlvr.jobs.search_world.world`) written as a passage corpus and
   one-/two-hop QA splits; a byte-level BPE tokenizer trained on its text; a BM25 index of the
   corpus; a tiny random Llama.
2. **Cold start (SFT)** in two parts, on the scripted expert's demonstrations
   (:mod:`rlvr.jobs.search_world.expert`); retrieved tokens are never trained. Part 1, careful demonstrations only
   (search the full name, answer from the passage), teaches the skill; part 2, the expert's
   everyday habits (mostly guessing or searching badly), sets what the policy prefers to do. The
   SFT policy can search well but mostly does not.
3. **RL**: GRPO (or PPO, ``--algorithm ppo``) with the ``search`` environment over the index and
   the ``qa_em`` reward; then the same RL again from the same SFT weights with the retrieved tokens
   trained too (Search-R1's mask ablation, ``eval.mask_ablation``; ``--no-mask`` runs only that).
4. **Evaluation** on the held-out test split (greedy, :func:`rlvr.eval.benchmarks.evaluate`): EM of the
   SFT and RL policies with search, and without it (``search_direct``, the no-retrieval baseline).
5. **Report**: a console table, ``report.json``, ``metrics.jsonl`` (RL steps; SFT steps in
   ``sft/metrics.jsonl``; the ablation's in ``no_mask/``), ``checkpoints/`` (``sft/`` and the RL
   steps) and ``curves.png`` (both RL runs).

The recipe lives in ``rlvr/configs/search_world.yaml``; ``--key value`` overrides apply on top
(``rlvr train --run.steps 20 --world.num_people 200``); a copy of the recipe runs the same way
(``rlvr train my_world.yaml``: a config with a ``world`` section is a default-job recipe).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rlvr.core.config import BUNDLED_CONFIGS, EnvConfig, TrainConfig, load_config
from rlvr.core.models import build_tiny_model, build_tiny_tokenizer
from rlvr.data.tasks import row_to_task
from rlvr.eval.benchmarks import evaluate
from rlvr.jobs.search_world.expert import ExpertConfig, expert_trajectories
from rlvr.jobs.search_world.world import QUESTION_TYPES, WorldConfig, build_world, write_world
from rlvr.learners.dispatch import learner_for
from rlvr.learners.metrics import MetricsLogger, plot_metrics
from rlvr.learners.sft import train_on_trajectories
from rlvr.retrieval.bm25 import BM25Index
from rlvr.retrieval.corpus import Passage
from rlvr.rollout.episodes import make_env_factory

log = logging.getLogger(__name__)

RECIPE = BUNDLED_CONFIGS / "search_world.yaml"


@dataclass
class WorldSection(WorldConfig):
    """The synthetic world (the fields of :class:`rlvr.jobs.search_world.world.WorldConfig`) and its tokenizer."""

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    """Question kinds: birthplace, employer (one hop), birth_country (two hops)."""
    vocab_size: int = 1024
    """BPE vocabulary of the world's tokenizer (large enough that each name is one token)."""


@dataclass
class SFTSection:
    """The cold-start stage."""

    skill_steps: int = 300
    """First part: optimizer steps on careful demonstrations only (every one searches with the full
    name and answers from the passage), so the policy learns to use the tool and read a passage."""
    steps: int = 300
    """Second part: optimizer steps on the expert's everyday, mixed habits (``expert.*``), which set
    what the SFT policy prefers to do."""
    lr: float = 3e-3
    """Peak learning rate of the first part (cosine decay after warm-up)."""
    habit_lr: float = 1e-3
    """Peak learning rate of the second part (lower: it sets preferences, not skills)."""
    batch_size: int = 32
    """Demonstrations per optimizer step."""
    warmup_steps: int = 10
    """Linear warm-up steps."""


@dataclass
class EvalSection:
    """Held-out evaluation."""

    dev_limit: int = 60
    """Dev questions evaluated every ``run.eval_every`` RL steps (the curve)."""
    train_limit: int = 60
    """Training questions evaluated before and after RL (did RL raise reward on them?)."""
    test_limit: int = 0
    """Test questions for the final numbers (0 = all)."""
    batch_size: int = 64
    """Episodes per greedy rollout batch."""
    mask_ablation: bool = True
    """Also run the same RL from the same SFT weights with the retrieved tokens trained too
    (Search-R1's ablation) and report both. Off when ``--no-mask`` makes the main run the ablation."""


@dataclass
class DefaultJobConfig(TrainConfig):
    """:class:`TrainConfig` plus the world, the expert, the SFT stage and evaluation."""

    world: WorldSection = field(default_factory=WorldSection)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    sft: SFTSection = field(default_factory=SFTSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def validate(self) -> "DefaultJobConfig":
        """The job's own limits first: they name the job, where the learner's checks would name a
        setting the job never meant to change."""
        if self.algorithm not in ("grpo", "ppo", "rloo", "reinforce"):
            raise ValueError(f"algorithm {self.algorithm!r}: the default job runs an on-policy learner "
                             f"(grpo, ppo, rloo or reinforce)")
        return super().validate()


def is_job_recipe(path: str | Path) -> bool:
    """Whether a config file is a default-job recipe (it has a ``world`` section)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError:
        return False  # load_config reports it, naming the file
    return isinstance(raw, dict) and any(str(k).split(".")[0] == "world" for k in raw)


def load_job_config(overrides: list[str] | None = None, output_dir: str | None = None,
                    no_mask: bool = False, recipe: str | Path = RECIPE) -> DefaultJobConfig:
    """A recipe (the bundled one by default) with ``--key value`` overrides and the CLI's flags."""
    extra = list(overrides or [])
    if output_dir:
        extra += ["--run.output_dir", str(output_dir)]
    if no_mask:
        extra += ["--rl.mask_observations", "false"]
    cfg = load_config(recipe, extra, schema=DefaultJobConfig)
    if cfg.model.name_or_path != "world":
        raise ValueError(f"model.name_or_path {cfg.model.name_or_path!r}: the default job trains the "
                         f"tiny model on the world's own tokenizer ('world'); for other models give a "
                         f"config file to `rlvr train CONFIG`")
    if cfg.env.name != "search":
        raise ValueError(f"env.name {cfg.env.name!r}: the default job runs the 'search' environment")
    return cfg


def _stage(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def _tasks(rows: list[dict], limit: int = 0) -> list:
    rows = rows[:limit] if limit else rows
    return [row_to_task(r, r["id"], where=f"world question {r['id']}") for r in rows]


def build_job(cfg: DefaultJobConfig, out: Path):
    """World files, tokenizer, BM25 index and untrained model of a job. Returns a dict of parts."""
    w = cfg.world
    world = build_world(WorldConfig(**{f.name: getattr(w, f.name) for f in fields(WorldConfig)}
                                    | {"question_types": tuple(w.question_types)}))
    paths = write_world(world, out / "world")
    # Train the tokenizer on the text the policy will read: passages as the environment frames them.
    framing = [f"Question: {r['question']}\n<search> {r['metadata']['subject']} </search>"
               for r in world.splits["train"]]
    framing += [f"Doc 1(Title: {p['contents'].partition(chr(10))[0]}) " for p in world.passages]
    tokenizer = build_tiny_tokenizer(world.texts() + framing, vocab_size=w.vocab_size)
    index_dir = out / "index"
    index = BM25Index.build([Passage.from_contents(p["id"], p["contents"]) for p in world.passages],
                            workdir=index_dir)
    index.save(index_dir)
    model = build_tiny_model(tokenizer, hidden_size=cfg.model.hidden_size,
                             num_layers=cfg.model.num_layers, seed=cfg.model.seed)
    return {"world": world, "paths": paths, "tokenizer": tokenizer, "index_dir": index_dir,
            "model": model}


class _Offset:
    """A metrics logger seen through a step offset (the SFT parts log one continuous curve)."""

    def __init__(self, logger, offset: int):
        self.logger, self.offset = logger, offset

    def log(self, step: int, metrics: dict) -> None:
        self.logger.log(step + self.offset, metrics)


def _sft_config(cfg: DefaultJobConfig, steps: int, lr: float) -> DefaultJobConfig:
    c = copy.deepcopy(cfg)
    c.run.steps, c.optim.lr = steps, lr
    c.pref.batch_size, c.pref.epochs = cfg.sft.batch_size, 10_000  # run.steps caps the passes
    c.optim.warmup_steps, c.optim.schedule = cfg.sft.warmup_steps, "cosine"
    return c


def _em(model, tokenizer, tasks, factory, cfg: DefaultJobConfig, name: str) -> dict[str, float]:
    if not tasks:
        return {"n": 0, "em": math.nan, "searches": math.nan, "answered": math.nan}
    res = evaluate(model, tokenizer, {name: tasks}, factory, cfg=cfg.rollout,
                   batch_size=cfg.eval.batch_size, progress=False)
    m = res["datasets"][name]
    return {"n": int(m["n"]), "em": float(m["em"]), "searches": float(m["searches"]),
            "answered": float(m["answered"])}


def run_default(output_dir: str | None = None, overrides: list[str] | None = None,
                no_mask: bool = False, resume: bool = False, recipe: str | Path = RECIPE) -> int:
    """Run the default job; write the run directory; print the table. Returns the exit code."""
    if resume:
        raise ValueError("--resume: the default job always runs from the start (a few minutes); "
                         "resuming applies to `rlvr train CONFIG` runs")
    report = run_job(load_job_config(overrides, output_dir, no_mask, recipe))
    print(format_report(report))
    return 0


def run_job(cfg: DefaultJobConfig) -> dict[str, Any]:
    """The whole job for a loaded config; returns the report (also written to report.json)."""
    import torch


    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)

    _stage(f"building the world (seed {cfg.world.seed}), tokenizer, BM25 index and a "
           f"{cfg.model.num_layers}x{cfg.model.hidden_size} policy in {out}", t0)
    job = build_job(cfg, out)
    world, tok, model = job["world"], job["tokenizer"], job["model"]
    cfg.env.settings = {**dict(cfg.env.settings or {}), "index_dir": str(job["index_dir"])}
    search_factory = make_env_factory(cfg.env)
    direct_settings = {k: v for k, v in cfg.env.settings.items() if k in ("template", "chat")}
    direct_factory = make_env_factory(EnvConfig("search_direct", dict(cfg.env.verifiers),
                                                direct_settings))
    train_tasks = _tasks(world.splits["train"])
    dev_tasks = _tasks(world.splits["dev"], cfg.eval.dev_limit)
    test_tasks = _tasks(world.splits["test"], cfg.eval.test_limit)
    train_probe = train_tasks[:cfg.eval.train_limit]

    _stage(f"{len(world.passages)} passages; questions: {len(train_tasks)} train, "
           f"{len(world.splits['dev'])} dev, {len(world.splits['test'])} test; the expert writes "
           f"{cfg.expert.demos_per_question} demonstrations per training question", t0)
    obs, turns = cfg.rollout.max_obs_tokens, cfg.rollout.max_turns
    careful = ExpertConfig(p_good=1.0, p_guess=0.0, demos_per_question=1, seed=cfg.expert.seed + 1)
    skill_demos = (expert_trajectories(world, train_tasks, search_factory, tok, careful,
                                       max_obs_tokens=obs, max_turns=turns)
                   if cfg.sft.skill_steps else [])
    demos = expert_trajectories(world, train_tasks, search_factory, tok, cfg.expert,
                                max_obs_tokens=obs, max_turns=turns)
    habits = {b: sum(d.info["expert"] == b for d in demos) for b in ("good", "guess", "bad")}
    demo_em = sum(d.reward for d in demos) / len(demos)

    total_sft = cfg.sft.skill_steps + cfg.sft.steps
    sft_logger = MetricsLogger(out / "sft", total_steps=total_sft, progress=cfg.run.progress)
    sft_stats: dict[str, Any] = {}
    results_careful = None
    try:
        if cfg.sft.skill_steps:
            _stage(f"SFT cold start, part 1: {cfg.sft.skill_steps} steps on {len(skill_demos)} "
                   f"careful demonstrations (search the full name, answer from the passage)", t0)
            sft_stats["skill"] = train_on_trajectories(
                model, tok, skill_demos, _sft_config(cfg, cfg.sft.skill_steps, cfg.sft.lr),
                logger=sft_logger)
            # what the policy can do when it searches well, before its habits are set
            results_careful = _em(model, tok, test_tasks, search_factory, cfg, "test")
            model.train()
        _stage(f"SFT cold start, part 2: {cfg.sft.steps} steps on {len(demos)} demonstrations of "
               f"the expert's habits {habits} (expert EM {demo_em:.2f})", t0)
        if cfg.sft.steps:
            sft_stats["habits"] = train_on_trajectories(
                model, tok, demos, _sft_config(cfg, cfg.sft.steps, cfg.sft.habit_lr),
                logger=_Offset(sft_logger, cfg.sft.skill_steps))
    finally:
        sft_logger.close()
    sft_dir = out / "checkpoints" / "sft"
    model.save_pretrained(sft_dir)
    tok.save_pretrained(sft_dir)
    t_sft = time.perf_counter() - t0

    _stage("evaluating the SFT policy on the test split (with and without search)", t0)
    results: dict[str, dict] = {}
    if results_careful is not None:
        results["sft_part1"] = {"search": results_careful}
    results["sft"] = {"search": _em(model, tok, test_tasks, search_factory, cfg, "test"),
                      "no_search": _em(model, tok, test_tasks, direct_factory, cfg, "test")}
    train_before = _em(model, tok, train_probe, search_factory, cfg, "train")
    dev_before = _em(model, tok, dev_tasks, search_factory, cfg, "dev")

    def dev_eval(m, t, step):
        r = _em(m, t, dev_tasks, search_factory, cfg, "dev")
        return {"em": r["em"], "searches": r["searches"]}

    # The RL runs: the configured one, then (unless it is already the ablation) the same RL with the
    # retrieved tokens trained too, from the same SFT weights — Search-R1's mask ablation.
    runs = [("rl", cfg.rl.mask_observations, out)]
    if cfg.eval.mask_ablation and cfg.rl.mask_observations:
        runs.append(("rl_no_mask", False, out / "no_mask"))
    sft_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    learner = learner_for(cfg.algorithm)
    train_after, t_rl = {}, {}
    for name, mask, run_dir in runs:
        t1 = time.perf_counter()
        model.load_state_dict(sft_state)
        rl_cfg = copy.deepcopy(cfg)
        rl_cfg.rl.mask_observations, rl_cfg.run.output_dir = mask, str(run_dir)
        mode = "masked" if mask else "NOT masked (the ablation)"
        _stage(f"RL: {cfg.algorithm} for {cfg.run.steps} steps of {cfg.rl.prompts_per_step} "
               f"prompts x {cfg.rollout.samples_per_prompt} samples; retrieved tokens {mode}", t0)
        run_dir.mkdir(parents=True, exist_ok=True)
        model.train()
        logger = MetricsLogger(run_dir, total_steps=cfg.run.steps, progress=cfg.run.progress)
        # step 0 of the curve: the SFT policy, before any RL update
        logger.log(0, {"eval/em": dev_before["em"], "eval/searches": dev_before["searches"]})
        try:
            learner(rl_cfg, model=model, tokenizer=tok, tasks=train_tasks, eval_fn=dev_eval,
                    logger=logger)
        finally:
            logger.close()
        model.eval()
        t_rl[name] = time.perf_counter() - t1
        _stage("evaluating that RL policy on the test split (with and without search)", t0)
        results[name] = {"search": _em(model, tok, test_tasks, search_factory, cfg, "test"),
                         "no_search": _em(model, tok, test_tasks, direct_factory, cfg, "test")}
        train_after[name] = _em(model, tok, train_probe, search_factory, cfg, "train")["em"]

    wall = time.perf_counter() - t0
    report = {
        "test_em": {p: {s: r["em"] for s, r in v.items()} for p, v in results.items()},
        "test": results,
        "rl_gain_em_points": 100 * (results["rl"]["search"]["em"] - results["sft"]["search"]["em"]),
        "train_probe_em": {"before_rl": train_before["em"], "after_rl": train_after["rl"],
                           "n": train_before["n"],
                           **({"after_rl_no_mask": train_after["rl_no_mask"]}
                              if "rl_no_mask" in train_after else {})},
        "dev_em": {"before_rl": dev_before["em"]},
        "algorithm": cfg.algorithm, "mask_observations": cfg.rl.mask_observations,
        "seed": cfg.run.seed, "world_seed": cfg.world.seed,
        "expert": {"demonstrations": len(demos), "habits": habits, "em": demo_em},
        "sft": sft_stats,
        "wall_time_s": {"total": wall, "build_and_sft": t_sft,
                        **{f"{n}_with_eval": v for n, v in t_rl.items()}},
        # CPU seconds of this process: on a shared machine wall time overstates the cost
        "cpu_time_s": time.process_time() - cpu0,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    try:
        plot_curves({("RL, retrieved tokens masked" if mask else "RL, retrieved tokens trained"):
                     d / "metrics.jsonl" for _, mask, d in runs}, out / "curves.png")
    except Exception as e:  # a plot must never fail a finished run
        log.warning("plotting failed: %s", e)
    _stage(f"done: {out / 'report.json'}, {out / 'curves.png'}", t0)
    return report


def plot_curves(runs: dict[str, Path], out_png: Path) -> Path:
    """Reward on training rollouts, held-out EM and searches per trajectory against RL step, one
    line per RL run (label → its metrics.jsonl)."""
    return plot_metrics(runs, out_png, keys=("reward/mean", "eval/em", "eval/searches",
                                             "env/searches"))


def format_report(report: dict[str, Any]) -> str:
    """The console table: test EM per policy and setting, then the key facts of the run."""
    em, test = report["test_em"], report["test"]
    n = test["sft"]["search"]["n"]
    mask = "masked" if report["mask_observations"] else "NOT masked"
    rows = [("SFT, part 1 only (careful demos)", "sft_part1"), ("SFT policy", "sft"),
            (f"RL policy ({report['algorithm']}, {mask})", "rl"),
            (f"RL policy ({report['algorithm']}, NOT masked)", "rl_no_mask")]
    lines = [f"test EM (n = {n})                     with search   no search   searches/q"]
    for label, key in rows:
        if key in em:
            no_search = em[key].get("no_search")
            lines.append(f"  {label:<36}{em[key]['search']:>9.3f}   "
                         f"{'' if no_search is None else f'{no_search:9.3f}':>9}   "
                         f"{test[key]['search']['searches']:>9.2f}")
    lines.append(f"RL gain over SFT: {report['rl_gain_em_points']:+.1f} EM points")
    if "rl_no_mask" in em:
        gap = 100 * (em["rl"]["search"] - em["rl_no_mask"]["search"])
        lines.append(f"masking the retrieved tokens: {gap:+.1f} EM points over training on them")
    probe = report["train_probe_em"]
    lines.append(f"training prompts EM (n = {probe['n']}): {probe['before_rl']:.3f} -> "
                 f"{probe['after_rl']:.3f}")
    lines.append(f"wall time: {report['wall_time_s']['total']:.0f}s")
    return "\n".join(lines)
