"""Rejection sampling: the bridge from the RL environments to the offline modes.

Generate ``samples_per_prompt`` episodes per task with an engine, keep those the environment's
verifiers accept, and write a dataset:

- ``mode="sft"``: one row per accepted episode — ``prompt`` (the rendered prompt text),
  ``completion`` (the text after it) and the exact ``token_ids`` / ``loss_mask``, so tool
  observations stay out of the loss when the SFT learner reads the file back with the same
  tokenizer (rejection-sampling fine-tuning, as in the R1 and Llama 2 pipelines).
- ``mode="pairs"``: per task, each accepted episode paired with a rejected one of the same group —
  ``prompt`` / ``chosen`` / ``rejected`` text for DPO or a reward model.

An episode is accepted when its ``correct`` is True, or, when the verifiers do not decide
correctness, when its reward reaches ``min_reward``. Episodes that errored are never accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from rlvr.core.types import Task, Trajectory
from rlvr.rollout.episodes import collect


def accepted(traj: Trajectory, min_reward: float = 1.0) -> bool:
    if traj.error or traj.finish_reason == "error":
        return False
    if traj.correct is not None:
        return bool(traj.correct)
    return traj.reward >= min_reward


def _texts(tokenizer, traj: Trajectory) -> tuple[str, str]:
    return (tokenizer.decode(traj.token_ids[: traj.prompt_len], skip_special_tokens=False),
            tokenizer.decode(traj.token_ids[traj.prompt_len:], skip_special_tokens=False))


def sft_rows(trajectories: Sequence[Trajectory], tokenizer, min_reward: float = 1.0) -> list[dict[str, Any]]:
    rows = []
    for t in trajectories:
        if accepted(t, min_reward) and t.num_sampled:
            prompt, completion = _texts(tokenizer, t)
            rows.append({"prompt": prompt, "completion": completion, "token_ids": list(t.token_ids),
                         "loss_mask": list(t.loss_mask), "reward": t.reward, "task_id": t.task_id})
    return rows


def pair_rows(trajectories: Sequence[Trajectory], tokenizer, min_reward: float = 1.0,
              max_pairs_per_task: int = 1) -> list[dict[str, Any]]:
    """Chosen = accepted, rejected = not accepted, from the same group (one prompt instance);
    the highest-reward accepted episodes are paired with the lowest-reward rejected ones."""
    groups: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault(t.group_id or t.task_id, []).append(t)
    rows = []
    for group in groups.values():
        good = sorted((t for t in group if accepted(t, min_reward)), key=lambda t: -t.reward)
        bad = sorted((t for t in group if not accepted(t, min_reward) and len(t) > t.prompt_len),
                     key=lambda t: t.reward)
        for g, b in list(zip(good, bad))[:max_pairs_per_task]:
            prompt, chosen = _texts(tokenizer, g)
            _, rejected = _texts(tokenizer, b)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                         "chosen_reward": g.reward, "rejected_reward": b.reward, "task_id": g.task_id})
    return rows


def write_jsonl(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return p


def rejection_sample(engine, tokenizer, env_factory: Callable, tasks: Sequence[Task], out_path: str | Path,
                     *, samples_per_prompt: int, rollout_cfg, mode: str = "sft",
                     min_reward: float = 1.0, batch_tasks: int = 16, seed: int | None = None,
                     ) -> dict[str, Any]:
    """Sample, filter and write ``out_path`` (JSONL). Returns counts and the acceptance rate."""
    if mode not in ("sft", "pairs"):
        raise ValueError(f"rejection sampling mode must be 'sft' or 'pairs', got {mode!r}")
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    trajs: list[Trajectory] = []
    tasks = list(tasks)
    for i in range(0, len(tasks), max(1, batch_tasks)):
        trajs += collect(engine, tokenizer, env_factory, tasks[i:i + batch_tasks],
                         samples_per_prompt=samples_per_prompt, cfg=rollout_cfg,
                         seed=None if seed is None else seed + i)
    rows = (sft_rows(trajs, tokenizer, min_reward) if mode == "sft"
            else pair_rows(trajs, tokenizer, min_reward))
    write_jsonl(rows, out_path)
    n_ok = sum(accepted(t, min_reward) for t in trajs)
    solved = {t.task_id for t in trajs if accepted(t, min_reward)}
    return {"tasks": len(tasks), "samples": len(trajs), "accepted": n_ok,
            "acceptance_rate": n_ok / max(1, len(trajs)), "tasks_solved": len(solved),
            "rows": len(rows), "path": str(out_path)}
