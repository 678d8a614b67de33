"""``rlvr eval --env bfcl``: BFCL v4 accuracy of a model, per category and overall.

    rlvr eval --env bfcl --model Qwen/Qwen2.5-1.5B-Instruct \\
              --data simple_python,multiple,parallel,parallel_multiple,irrelevance,live_simple \\
              --limit 50 --output-dir runs/bfcl-qwen

Each test is one greedy episode of the ``tools`` environment: the function docs go to the chat
template as tools, the model's calls are read in its template's format, and the ``bfcl`` verifier
checks them with BFCL's AST rules. ``live_multiple`` evaluates only the rows outside its training
split (:mod:`rlvr.data.bfcl`). ``multi_turn_base`` tests are episodes of the ``bfcl_multi_turn``
environment instead: user turns in sequence over BFCL's stateful APIs, scored by BFCL's per-turn
state and response checks (:mod:`rlvr.environments.bfcl_executor`). The output directory gets
``predictions.jsonl`` (one line per test, with the reason of every failure; a rerun resumes from
it), ``results.txt``, ``report.json`` and ``accuracy.png``. "overall" is the unweighted mean over
categories; "all rows" counts every test.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rlvr.core.config import EnvConfig, ModelConfig, RolloutConfig
from rlvr.core.models import load_policy, pick_device
from rlvr.data.bfcl import load_category
from rlvr.engines.factory import make_engine
from rlvr.environments.bfcl_executor import MULTI_TURN, load_entries
from rlvr.environments.bfcl_multi_turn import BfclMultiTurnEnv, tasks_from_entries
from rlvr.eval.benchmarks import read_predictions
from rlvr.rollout.episodes import collect, make_env_factory
from rlvr.verifiers.bfcl import bfcl


def run_bfcl(args) -> int:
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    if args.index or args.retriever:
        raise ValueError("--env bfcl does not retrieve; drop --index / --retriever")
    categories = [c.strip() for c in args.data.split(",") if c.strip()]
    datasets = {c: _multi_turn_tasks(c, args.limit) if c in MULTI_TURN
                else load_category(c, limit=args.limit) for c in categories}
    cfg = RolloutConfig(samples_per_prompt=1, max_turns=1, max_new_tokens=args.max_new_tokens,
                        max_total_tokens=args.max_total_tokens, max_obs_tokens=args.max_obs_tokens,
                        temperature=0.0, engine=args.engine)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / "predictions.jsonl"
    if args.overwrite:
        predictions.unlink(missing_ok=True)
    done = read_predictions(predictions)
    env_factory = make_env_factory(EnvConfig(name="tools", settings={"parser": "auto"}))
    multi = _multi_turn_setup(cfg, [t for c, ts in datasets.items() if c in MULTI_TURN for t in ts])
    model, tokenizer = load_policy(ModelConfig(name_or_path=args.model, dtype=args.dtype),
                                   pick_device(args.device))
    engine = make_engine(args.engine, model, tokenizer)
    with open(predictions, "a", encoding="utf-8") as f:
        for name, tasks in datasets.items():
            todo = [t for t in tasks if t.id not in done]
            for start in range(0, len(todo), args.batch_size):
                chunk = todo[start:start + args.batch_size]
                factory, run_cfg = multi if name in MULTI_TURN else (env_factory, cfg)
                trajs = collect(engine, tokenizer, factory, chunk, samples_per_prompt=1,
                                cfg=run_cfg, greedy=True)
                for task, traj in zip(chunk, trajs):
                    completion = tokenizer.decode(traj.completion_ids, skip_special_tokens=False)
                    if name in MULTI_TURN:  # scored by the environment: BFCL's per-turn checks
                        rec = _multi_turn_record(task, name, traj, completion)
                    else:
                        score = bfcl(completion, task.answer, **task.info)
                        rec = {"id": task.id, "category": name, "correct": bool(score.correct),
                               "reason": score.reason or traj.error or "", "error": traj.error,
                               "finish_reason": traj.finish_reason, "completion": completion,
                               "answer": task.answer}
                    done[task.id] = rec
                    f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                f.flush()
                if not args.no_progress:
                    print(f"{name}: {min(start + len(chunk), len(todo))}/{len(todo)}", file=sys.stderr)
    result = summarize({n: [done[t.id] for t in ts] for n, ts in datasets.items()})
    (out / "results.txt").write_text(format_table(result) + "\n")
    report = {"model": args.model, "env": "bfcl", "data": args.data, "limit": args.limit, **result}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(result, out / "accuracy.png", title=f"{Path(args.model).name} · BFCL")
    print(format_table(result))
    print(f"wrote {out / 'report.json'}", file=sys.stderr)
    return 0


# -- multi_turn_base: one episode of the bfcl_multi_turn environment per test ----------------------

def _multi_turn_tasks(category: str, limit: int) -> list:
    return tasks_from_entries(load_entries(category, limit), category)


def _multi_turn_setup(cfg, tasks: list):
    """(environment factory, rollout config) for multi-turn tests, or None when there are none.
    Every policy turn counts against ``max_turns``: it is set so that only BFCL's own step limit
    (``max_steps_per_turn`` steps with calls, and the answer, per user turn) can end a test."""
    from dataclasses import replace


    if not tasks:
        return None
    user_turns = max(len(t.info["entry"]["question"]) for t in tasks)
    factory = make_env_factory(EnvConfig(name="bfcl_multi_turn", settings={"parser": "auto"}))
    return factory, replace(cfg, max_turns=user_turns * (BfclMultiTurnEnv.max_steps_per_turn + 2))


def _multi_turn_record(task, category: str, traj, completion: str) -> dict:
    return {"id": task.id, "category": category, "correct": bool(traj.correct),
            "reason": (traj.error or traj.info.get("score_error")
                       or traj.info.get("score_reason", "")),
            "error": traj.error, "finish_reason": traj.finish_reason,
            "turns_passed": traj.reward_parts.get("turns_passed", 0.0),
            "user_turns": len(task.info["entry"]["question"]),
            "forced_quit": bool(traj.info.get("forced_quit")), "completion": completion,
            "answer": task.info["entry"]["ground_truth"]}


def summarize(records: dict[str, list[dict]]) -> dict:
    """Accuracy per category, their unweighted mean ("overall") and over all rows."""
    per = {}
    for name, recs in records.items():
        n = len(recs)
        per[name] = {"n": n, "accuracy": sum(r["correct"] for r in recs) / n if n else math.nan,
                     "errors": sum(1 for r in recs if r.get("error"))}
    accs = [m["accuracy"] for m in per.values() if not math.isnan(m["accuracy"])]
    rows = [r for recs in records.values() for r in recs]
    overall = {"n": len(rows), "accuracy": sum(accs) / len(accs) if accs else math.nan,
               "accuracy_all_rows": sum(r["correct"] for r in rows) / len(rows) if rows else math.nan}
    return {"categories": per, "overall": overall}


def format_table(result: dict) -> str:
    head = f"{'category':<24}{'n':>6}{'accuracy':>10}{'errors':>8}"
    lines = [head, "-" * len(head)]
    for name, m in result["categories"].items():
        lines.append(f"{name:<24}{m['n']:>6}{m['accuracy']:>10.3f}{m['errors']:>8}")
    o = result["overall"]
    lines += ["-" * len(head), f"{'overall (mean)':<24}{o['n']:>6}{o['accuracy']:>10.3f}",
              f"{'all rows':<24}{o['n']:>6}{o['accuracy_all_rows']:>10.3f}"]
    return "\n".join(lines)


def plot(result: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["categories"]) + ["overall"]
    values = [result["categories"][n]["accuracy"] for n in names[:-1]] + [result["overall"]["accuracy"]]
    values = [0.0 if v != v else v for v in values]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names)), 3.2))
    bars = ax.bar(names, values, color=["tab:blue"] * (len(names) - 1) + ["tab:gray"])
    for b, v in zip(bars, values):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("accuracy (AST)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
