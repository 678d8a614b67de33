"""Evaluation on benchmark files: batched greedy multi-turn rollouts, scored per dataset.

    result = evaluate(model, tokenizer, {"nq": nq_tasks, "hotpotqa": hp_tasks}, env_factory,
                      cfg=RolloutConfig(max_turns=4), batch_size=32,
                      predictions_path="runs/eval/predictions.jsonl")
    result["average"]["em"]

Every example is one greedy episode (``samples_per_prompt = 1``) through :func:`rlvr.rollout.episodes.collect`,
so evaluation sees exactly what training sees: the same environment, stop strings and budgets. The
policy's own text (the tokens it sampled, turn by turn: no retrieved passage and no corrective
message of the environment, whose ``<answer> and </answer>`` would read as an answer) is scored by
the verifiers ``qa_em``, ``qa_f1`` and ``qa_cover_em`` against the list of golds. The average is the unweighted mean over datasets, as in
the Search-R1 paper's "Avg." column.

Untagged answers. Under Search-R1's rules an episode without ``<answer>`` scores 0, even when the
policy's last turn states the right answer in plain text. Each record says whether that happened
(``untagged``) and the cover-EM of that text (``untagged_cover_em``); the summary counts them and
gives their mean cover-EM, so a low EM that is only a format problem shows as one. The text taken
(:func:`untagged_answer`) is what the policy sampled in its last turn (the observations after
it, such as Search-R1's invalid-action reminder, are not part of it), decoded without special
tokens, with ``<think>...</think>`` blocks removed and surrounding whitespace stripped. A
completion with an ``<answer>`` anywhere has no untagged answer, and neither has one whose last
turn was cut by ``max_new_tokens``, is empty, or still holds a ``<search>`` or an unclosed
``<think>``. With
``answer_tag="optional"`` that text is scored as the answer (EM / F1 / cover-EM and ``answered``).

Other environments (``scoring="reward"``: code, math, ...) are scored by the environment's own
verifiers during the episode: the record keeps ``reward`` and ``correct`` and the summary reports
``accuracy`` (the share of episodes the verifiers call correct) and ``reward`` (the mean reward;
partial credit included, e.g. the pass rate of code tests).

Predictions go to a JSONL file, one line per example, written as each batch finishes; a rerun with
the same file skips the examples already there (resume after an interruption). A half-written last
line from a killed run is ignored and its example is evaluated again.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable

from rlvr.core.scoring import verify
from rlvr.core.types import Task, Trajectory
from rlvr.engines.hf import HFEngine
from rlvr.environments.search import strip_information
from rlvr.rollout.episodes import collect
from rlvr.verifiers.qa import extract_answer

log = logging.getLogger(__name__)

#: report key → verifier; the first is the headline number.
METRICS = {"em": "qa_em", "f1": "qa_f1", "cover_em": "qa_cover_em"}
#: the per-dataset numbers of each scoring, the first the headline
SUMMARY_KEYS = {"qa": (*METRICS, "answered", "searches", "untagged", "untagged_cover_em"),
                "reward": ("accuracy", "reward")}
ANSWER_TAG = ("required", "optional")
_THINK = re.compile(r"<think>.*?</think>", re.S)


def extract_prediction(completion: str) -> str | None:
    """The last ``<answer>`` of the policy's own text (as the verifiers read it); None when the
    policy never answered."""
    pred = extract_answer(strip_information(completion))
    return None if pred is None else pred.strip()


def untagged_answer(completion: str, last_turn: str | None = None) -> str | None:
    """The plain-text final answer of a completion with no ``<answer>`` tag: ``last_turn`` (the
    text the policy sampled in its last turn; default: the completion after its last
    ``</information>``), ``<think>`` blocks removed, stripped. None when the completion has an
    ``<answer>`` or the last turn is empty, a search, or unfinished reasoning."""
    if extract_prediction(completion) is not None:
        return None
    last = completion.rsplit("</information>", 1)[-1] if last_turn is None else last_turn
    last = _THINK.sub("", last).strip()
    if not last or "<search>" in last or "<think>" in last:
        return None
    return last


def score_example(completion: str, golds: Any, **info: Any) -> dict[str, float]:
    """EM / F1 / cover-EM of one completion through the registered verifiers (never raises)."""
    text = strip_information(completion)
    return {key: float(verify(name, text, golds, **info).reward) for key, name in METRICS.items()}


def read_predictions(path: str | Path) -> dict[str, dict]:
    """Records of a predictions file by example id; unreadable lines (a killed write) are skipped."""
    p = Path(path)
    if not p.exists():
        return {}
    out: dict[str, dict] = {}
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not valid JSON (an interrupted write?); it is redone", p, n)
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                out[rec["id"]] = rec
    return out


def make_record(task: Task, traj: Trajectory, tokenizer, dataset: str, scoring: str = "qa",
                answer_tag: str = "required") -> dict:
    prompt = tokenizer.decode(traj.token_ids[: traj.prompt_len], skip_special_tokens=False)
    completion = tokenizer.decode(traj.completion_ids, skip_special_tokens=False)
    question = task.prompt if isinstance(task.prompt, str) else task.prompt[-1]["content"]
    common = {"reward": traj.reward, "finish_reason": traj.finish_reason, "truncated": traj.truncated,
              "error": traj.error, "turns": len(traj.turns), "metrics": traj.info,
              "prompt": prompt, "trajectory": completion}
    if scoring == "reward":  # scored by the environment's verifiers in the episode
        return {"id": task.id, "dataset": dataset, "question": question, "answer": task.answer,
                "correct": traj.correct, **common}
    golds = task.answer if isinstance(task.answer, list) else [task.answer]
    turns = [tokenizer.decode(traj.token_ids[t.action_start:t.action_end], skip_special_tokens=True)
             for t in traj.turns]
    own = "\n".join(turns) if turns else strip_information(completion)  # what the policy wrote
    prediction = extract_prediction(own)
    # a last turn cut by max_new_tokens was never finished: no final answer, tagged or not
    untagged = (None if not turns or traj.turns[-1].stop_reason == "length"
                else untagged_answer(own, turns[-1]))
    untagged_cover = (score_example(f"<answer>{untagged}</answer>", golds, **task.info)["cover_em"]
                      if untagged is not None else 0.0)
    if untagged is not None and answer_tag == "optional":
        prediction, scores = untagged, score_example(f"<answer>{untagged}</answer>", golds, **task.info)
    else:
        scores = score_example(own, golds, **task.info)
    return {
        "id": task.id, "dataset": dataset, "question": question,
        "golden_answers": golds, "prediction": prediction, **scores,
        "untagged": untagged is not None, "untagged_answer": untagged,
        "untagged_cover_em": untagged_cover,
        **{k: common[k] for k in ("finish_reason", "truncated", "error", "turns")},
        # the environment's own count where it keeps one (search_rag retrieves in the prompt,
        # with no tool call); else the search tool calls
        "searches": int(traj.info.get("searches",
                                      sum(1 for c in traj.tool_calls if c.name == "search"))),
        **{k: common[k] for k in ("metrics", "prompt", "trajectory")},
    }


def summarize(records: list[dict], scoring: str = "qa") -> dict[str, float]:
    """Means of the metrics over records (NaN when there are none); ``untagged`` is a count and
    ``untagged_cover_em`` the mean over those records only."""
    n = len(records)
    out: dict[str, float] = {"n": n}
    for key in SUMMARY_KEYS[scoring]:
        if key == "answered":
            vals = [float(r.get("prediction") is not None) for r in records]
        elif key == "accuracy":
            vals = [float(r.get("correct") is True) for r in records]
        elif key == "untagged":
            out[key] = sum(1 for r in records if r.get("untagged"))
            continue
        elif key == "untagged_cover_em":
            out[key] = _mean([float(r["untagged_cover_em"]) for r in records if r.get("untagged")])
            continue
        else:
            vals = [float(r.get(key) or 0.0) for r in records]
        out[key] = sum(vals) / n if n else math.nan
    return out


def evaluate(model, tokenizer, datasets: dict[str, list[Task]], env_factory: Callable[[], Any], *,
             cfg, batch_size: int = 16, predictions_path: str | Path | None = None,
             progress: bool = True, engine=None, scoring: str = "qa",
             answer_tag: str = "required", on_batch: Callable | None = None) -> dict:
    """Greedy multi-turn rollouts on every task; per-dataset EM / F1 / cover-EM and their average.

    ``scoring``: ``qa`` (EM / F1 / cover-EM against gold lists) or ``reward`` (the environment's
    verifiers: accuracy and mean reward). ``answer_tag``: ``required`` (Search-R1) or ``optional``
    (an untagged final answer is scored, see the module docstring).

    ``cfg`` is a :class:`rlvr.core.config.RolloutConfig` (turn and token budgets; sampling settings are
    ignored: evaluation is greedy). ``engine`` overrides the default :class:`rlvr.engines.hf.HFEngine`
    over ``model`` (e.g. a vLLM engine). ``on_batch(dataset, tasks, trajectories)`` sees each
    batch's trajectories (``rlvr eval`` logs them with :class:`rlvr.rollout.log.EvalRolloutLog`).
    Returns ``{"datasets": {name: {"n", "em", "f1", "cover_em",
    "answered", "searches"}}, "average": {...}, "num_examples", "predictions_path"}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if scoring not in SUMMARY_KEYS:
        raise ValueError(f"scoring must be one of {', '.join(SUMMARY_KEYS)}, got {scoring!r}")
    if answer_tag not in ANSWER_TAG:
        raise ValueError(f"answer_tag must be one of {', '.join(ANSWER_TAG)}, got {answer_tag!r}")
    if not datasets:
        raise ValueError("no datasets to evaluate")
    if engine is None:
        engine = HFEngine(model, tokenizer)
    done = read_predictions(predictions_path) if predictions_path else {}
    todo = [(name, t) for name, tasks in datasets.items() for t in tasks if t.id not in done]
    total = sum(len(tasks) for tasks in datasets.values())
    if done and todo:
        log.info("resuming: %d of %d examples already in %s", total - len(todo), total,
                 predictions_path)
    bar = _progress_bar(total, total - len(todo), progress)
    out_file = _open_append(predictions_path) if predictions_path else None
    try:
        for name in datasets:
            pending = [t for n, t in todo if n == name]
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                trajs = collect(engine, tokenizer, env_factory, chunk, samples_per_prompt=1,
                                cfg=cfg, greedy=True)
                for task, traj in zip(chunk, trajs):
                    rec = make_record(task, traj, tokenizer, name, scoring, answer_tag)
                    done[task.id] = rec
                    if out_file is not None:
                        out_file.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                if on_batch is not None:
                    on_batch(name, chunk, trajs)
                if out_file is not None:
                    out_file.flush()  # a killed run loses at most the batch in flight
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if out_file is not None:
            out_file.close()
        if bar is not None:
            bar.close()
    per = {name: summarize([done[t.id] for t in tasks], scoring) for name, tasks in datasets.items()}
    average = {key: _mean([per[n][key] for n in per]) for key in SUMMARY_KEYS[scoring]}
    average["n"] = total
    if scoring == "qa":  # a count sums; their cover-EM is the mean over all of them
        everything = [done[t.id] for tasks in datasets.values() for t in tasks]
        both = summarize(everything, scoring)
        average.update(untagged=both["untagged"], untagged_cover_em=both["untagged_cover_em"])
    result = {"datasets": per, "average": average, "num_examples": total, "scoring": scoring,
              "answer_tag": answer_tag,
              "predictions_path": str(predictions_path) if predictions_path else None}
    if progress:
        print(format_table(result))
    return result


def format_table(result: dict) -> str:
    """A fixed-width table: one row per dataset, then the average over datasets; for QA, a line on
    the untagged answers under it."""
    qa = result.get("scoring", "qa") == "qa"
    if qa:
        head = f"{'dataset':<18}{'n':>7}{'EM':>8}{'F1':>8}{'cover-EM':>10}{'answered':>10}"
    else:
        head = f"{'dataset':<18}{'n':>7}{'accuracy':>10}{'reward':>10}"
    lines = [head, "-" * len(head)]
    rows = list(result["datasets"].items()) + [("average", result["average"])]
    for name, m in rows:
        if name == "average":
            lines.append("-" * len(head))
        if qa:
            lines.append(f"{name:<18}{int(m['n']):>7}{m['em']:>8.3f}{m['f1']:>8.3f}"
                         f"{m['cover_em']:>10.3f}{m['answered']:>10.3f}")
        else:
            lines.append(f"{name:<18}{int(m['n']):>7}{m['accuracy']:>10.3f}{m['reward']:>10.3f}")
    if qa:
        lines.append(untagged_note(result))
    return "\n".join(lines)


def untagged_note(result: dict) -> str:
    """One line: how many final answers had no ``<answer>`` tag, their cover-EM, how they count."""
    avg = result["average"]
    k, n = int(avg.get("untagged", 0)), int(avg["n"])
    if not k:
        return f"untagged answers (no <answer> tag): 0 of {n}"
    how = ("scored as the answer (--answer-tag optional)" if result.get("answer_tag") == "optional"
           else "scored 0 as Search-R1 rules; --answer-tag optional scores them")
    return (f"untagged answers (no <answer> tag): {k} of {n}, cover-EM on them "
            f"{avg['untagged_cover_em']:.3f}; {how}")


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _open_append(path: str | Path):
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # A run killed mid-line leaves no trailing newline; start on a fresh line so the next record
    # stays readable (the broken fragment is skipped by read_predictions).
    needs_newline = False
    if p.exists() and p.stat().st_size > 0:
        with p.open("rb") as f:
            f.seek(-1, 2)
            needs_newline = f.read(1) != b"\n"
    f = p.open("a", encoding="utf-8")
    if needs_newline:
        f.write("\n")
    return f


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="eval", unit="ex")
