"""Rollout logs: the trajectories a run sampled, token by token, for ``rlvr view`` and for debugging.

An RL run writes ``rollouts/step_NNNNNN.jsonl.gz`` every ``run.log_rollouts_every`` steps (every
trajectory, or whole groups drawn with a seed up to ``run.log_rollouts_max``); ``rlvr eval`` writes
``rollouts/eval.jsonl.gz`` for its predictions. One JSON object per trajectory:

==================  =================================================================================
``step``            RL step (None for an evaluation)
``row``             row of the trajectory in the step's trained batch (None: collected, not trained,
                    e.g. a zero-variance group DAPO dropped)
``task_id``         the task; ``group_id`` its prompt instance; ``dataset`` (evaluation only)
``prompt_len``      prompt tokens come first
``token_ids``       (T,) every token of the episode
``tokens``          (T,) each token decoded on its own (byte-level pieces may show as �)
``loss_mask``       (T,) 1 = sampled by the policy (the trajectory's own mask, whatever was trained)
``trained_mask``    (T,) the training mask the update used (observations too under ``--no-mask``);
                    None when the trajectory was not trained
``logprobs``        (T,) the engine's (behaviour) logprob of each sampled token, 0.0 elsewhere
``trainer_logprobs`` (T,) the trainer's logprob before the update when the loop computed it
                    (``rl.old_logprobs = recompute``), else None: the log never pays a forward pass
``advantages``      (T,) per-token advantage over the training mask; ``advantage`` its mean
``segments``        ``[{"kind": "prompt"|"sampled"|"observation", "start", "end", "text"}]``, runs
                    of the mask in order, each decoded whole
``reward``          the trajectory's reward; ``reward_parts`` per verifier; ``reason`` the combined
                    reason; ``reasons`` per verifier (``"name: why; name2: why"`` split)
``turns``, ``tool_calls``, ``finish_reason``, ``truncated``, ``error``, ``correct``, ``info``
==================  =================================================================================
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from rlvr.core.types import Trajectory

log = logging.getLogger(__name__)

ROLLOUT_DIR = "rollouts"
EVAL_FILE = "eval.jsonl.gz"


def step_file(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / ROLLOUT_DIR / f"step_{step:06d}.jsonl.gz"


def check_settings(every: int, max_per_step: int) -> None:
    """Refuse negative settings, naming the field."""
    if every < 0:
        raise ValueError(f"run.log_rollouts_every must be >= 0 (0 = never), got {every}")
    if max_per_step < 0:
        raise ValueError(f"run.log_rollouts_max must be >= 0 (0 = all), got {max_per_step}")


def pick_groups(trajs: list[Trajectory], max_trajs: int, seed: int) -> list[int]:
    """Indices of the trajectories to log: all when ``max_trajs`` is 0, else whole groups in a
    seeded random order while they fit in ``max_trajs`` (at least one group), in input order."""
    if not max_trajs or len(trajs) <= max_trajs:
        return list(range(len(trajs)))
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(trajs):
        groups.setdefault(t.group_id or f"#{i}", []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    for g in order:
        if chosen and len(chosen) + len(groups[g]) > max_trajs:
            continue
        chosen += groups[g]
    return sorted(chosen)


def segments(token_ids: list[int], loss_mask: list[int], prompt_len: int) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` runs: the prompt, then alternating sampled / observation spans."""
    out: list[tuple[str, int, int]] = []
    if prompt_len:
        out.append(("prompt", 0, prompt_len))
    i, n = prompt_len, len(token_ids)
    while i < n:
        j = i
        while j < n and loss_mask[j] == loss_mask[i]:
            j += 1
        out.append(("sampled" if loss_mask[i] else "observation", i, j))
        i = j
    return out


def split_reasons(reason: str, names: Iterable[str]) -> dict[str, str]:
    """Per-verifier reasons out of :func:`rlvr.core.scoring.combine`'s ``"name: why; name2: why"``;
    a reason that names no verifier goes under ``""``."""
    names = set(names)
    out: dict[str, str] = {}
    for piece in reason.split("; ") if reason else []:
        name, sep, why = piece.partition(": ")
        if sep and name in names:
            out[name] = why
        else:
            out[""] = f"{out['']}; {piece}" if "" in out else piece
    return out


def _floats(xs) -> list[float]:
    return [round(float(x), 6) for x in xs]


def trajectory_record(traj: Trajectory, tokenizer, *, step: int | None = None, row: int | None = None,
                      advantages=None, trained_mask=None, trainer_logprobs=None,
                      **extra: Any) -> dict[str, Any]:
    """One log record (the module docstring lists the fields). Per-token tensors are rows of the
    batch (T_batch,) and are cut to the trajectory's length."""
    n = len(traj)
    ids = list(traj.token_ids)
    reason = str(traj.info.get("score_reason", ""))
    adv = _floats(advantages[:n]) if advantages is not None else None
    tmask = [int(x) for x in trained_mask[:n]] if trained_mask is not None else None
    denom = sum(tmask) if tmask else 0
    rec = {
        "step": step, "row": row, "task_id": traj.task_id, "group_id": traj.group_id, **extra,
        "prompt_len": traj.prompt_len, "token_ids": ids,
        "tokens": [tokenizer.decode([i], skip_special_tokens=False) for i in ids],
        "loss_mask": list(traj.loss_mask), "trained_mask": tmask,
        "logprobs": _floats(traj.logprobs),
        "trainer_logprobs": _floats(trainer_logprobs[:n]) if trainer_logprobs is not None else None,
        "advantages": adv,
        "advantage": (sum(a for a, m in zip(adv, tmask) if m) / denom) if adv and denom else None,
        "segments": [{"kind": k, "start": a, "end": b,
                      "text": tokenizer.decode(ids[a:b], skip_special_tokens=False)}
                     for k, a, b in segments(ids, traj.loss_mask, traj.prompt_len)],
        "reward": float(traj.reward), "reward_parts": dict(traj.reward_parts), "reason": reason,
        "reasons": split_reasons(reason, traj.reward_parts),
        "correct": traj.correct, "turns": [asdict(t) for t in traj.turns],
        "tool_calls": [asdict(c) for c in traj.tool_calls], "finish_reason": traj.finish_reason,
        "truncated": traj.truncated, "error": traj.error,
        "info": {k: v for k, v in traj.info.items() if isinstance(v, (int, float, str, bool))},
    }
    return rec


def write_records(path: Path, records: list[dict], append: bool = False) -> Path:
    """Gzipped JSONL. Appending adds a gzip member (a multi-member file reads as one stream)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path if append else path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "at" if append else "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    if not append:
        tmp.replace(path)  # a reader never sees half a step
    return path


def read_records(path: str | Path) -> Iterator[dict]:
    """Records of one log file. A torn end (a run killed mid-write) ends the file with a warning;
    a line that is not JSON raises naming FILE:LINE."""
    p = Path(path)
    n = 0
    with gzip.open(p, "rt", encoding="utf-8") as f:
        it = iter(f)
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                log.warning("%s ends early after line %d (%s): the rest is lost", p, n, e)
                return
            n += 1
            if not line.strip():
                continue
            if not line.endswith("\n"):
                log.warning("%s line %d is torn (a run killed mid-write?); skipped", p, n)
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{n}: not a JSON rollout record ({e.msg})") from None


def read_run(run_dir: str | Path) -> dict[int | None, list[dict]]:
    """Every logged record of a run (or evaluation) directory by step (None = evaluation)."""
    d = Path(run_dir) / ROLLOUT_DIR
    out: dict[int | None, list[dict]] = {}
    for p in sorted(d.glob("*.jsonl.gz")) if d.is_dir() else []:
        for rec in read_records(p):
            out.setdefault(rec.get("step"), []).append(rec)
    return out


def log_step(s, step: int, collected: list[Trajectory], trained: list[Trajectory], batch=None) -> Path | None:
    """Write one RL step's log when ``run.log_rollouts_every`` says so. ``trained`` are the rows
    of ``batch`` in order (a subset of ``collected`` under dynamic sampling; this rank's rows
    under torchrun, so other ranks' episodes are logged without advantages)."""
    run = s.cfg.run
    check_settings(run.log_rollouts_every, run.log_rollouts_max)
    if not run.log_rollouts_every or step % run.log_rollouts_every or not collected:
        return None
    if not getattr(getattr(s, "world", None), "main", True):
        return None  # under torchrun rank 0 writes; ``collected`` holds every rank's episodes
    rows = {id(t): i for i, t in enumerate(trained)} if batch is not None else {}
    trainer = batch.old_logprobs if s.cfg.rl.old_logprobs == "recompute" and batch is not None else None
    records = []
    for i in pick_groups(collected, run.log_rollouts_max, seed=run.seed * 1_000_003 + step):
        t = collected[i]
        r = rows.get(id(t))
        per_row = {} if r is None else {
            "advantages": batch.advantages[r].tolist(), "trained_mask": batch.loss_mask[r].tolist(),
            "trainer_logprobs": trainer[r].tolist() if trainer is not None else None}
        records.append(trajectory_record(t, s.tokenizer, step=step, row=r, **per_row))
    return write_records(step_file(s.out_dir, step), records)


class EvalRolloutLog:
    """``rollouts/eval.jsonl.gz`` of an evaluation directory, appended batch by batch (an
    evaluation resumes; ``overwrite`` starts the file afresh)."""

    def __init__(self, out_dir: str | Path, tokenizer, overwrite: bool = False) -> None:
        self.path = Path(out_dir) / ROLLOUT_DIR / EVAL_FILE
        self.tokenizer = tokenizer
        if overwrite:
            self.path.unlink(missing_ok=True)

    def __call__(self, dataset: str, tasks: list, trajs: list[Trajectory]) -> None:
        recs = [trajectory_record(t, self.tokenizer, dataset=dataset) for t in trajs]
        write_records(self.path, recs, append=True)
