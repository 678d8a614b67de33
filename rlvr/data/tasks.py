"""Task sources: bundled generators by name, or JSONL / parquet files.

A file row needs a prompt (``messages``, ``prompt``, ``question``, MATH's ``problem`` or the
original MBPP's ``text``) and an answer (``answer``, ``golden_answers``, MATH's ``solution``,
HumanEval's ``test`` beside its ``entry_point``, or MBPP's ``test_list``); every other field goes to
``Task.info``, so raw HumanEval, MBPP, MATH and GSM8K rows load as they are published. Task ids are ``"<source>:<row>"``
(the 0-based count of rows, blank lines not counted) so two datasets never share one.

Every error about a row starts with ``FILE:LINE``, the 1-based line of the file as an editor shows
it (a parquet table has no lines: ``FILE row N``, counted from 1). A byte that is not UTF-8 is
named with its line and position, never as a bare codec error. A row whose answer no verifier can
ever reward (``"answer": null``, or an answer the run's verifiers cannot read) is refused when
the tasks are loaded, not trained on silently with reward 0; a run that scores without reference
answers by design (a reward model) says so with ``answers_optional`` and gets one warning with the
count instead.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from rlvr.core.registry import VERIFIERS
from rlvr.core.types import Task
from rlvr.data.rows import DataError, located_rows, read_located_rows

log = logging.getLogger(__name__)

#: name → generator(n, seed) of bundled toy tasks
BUNDLED_TASKS: dict[str, Callable[[int, int], list[Task]]] = {}
#: bad rows quoted in one error message; the rest are counted
SHOWN_ERRORS = 5
#: Characters one token may stand for, generously: ordinary text and code take 3-5 characters a
#: token in the BPE vocabularies of current models, so a prompt over ``max_total_tokens`` × this
#: many characters cannot fit the token budget unless it is almost all long repeated runs.
CHARS_PER_TOKEN_BOUND = 16
TOO_LONG = ("refuse", "skip")


def bundled_task(name: str):
    def add(fn):
        if name in BUNDLED_TASKS:
            raise ValueError(f"bundled task {name!r} is already registered")
        BUNDLED_TASKS[name] = fn
        return fn
    return add


@bundled_task("calculator")
def calculator_tasks(n: int = 256, seed: int = 0) -> list[Task]:
    """Two-operand integer arithmetic, e.g. 'What is 12*7?'."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice("+-*")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        tasks.append(Task(f"What is {a}{op}{b}?", str(value), id=f"calculator:{i}"))
    return tasks


def prompt_char_budget(max_total_tokens: int) -> int:
    """The prompt length, in characters, above which a prompt cannot fit ``max_total_tokens``
    (:data:`CHARS_PER_TOKEN_BOUND` characters a token); 0 (no check) for a budget of 0."""
    return max(0, int(max_total_tokens)) * CHARS_PER_TOKEN_BOUND


def prompt_chars(prompt: Any) -> int:
    """Characters of a prompt: its text, or the sum of its messages' contents (no tokenizer)."""
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list):
        return sum(len(str(m.get("content") or "")) if isinstance(m, dict) else len(str(m))
                   for m in prompt)
    return len(str(prompt))


def load_tasks(spec: str, limit: int = 0, seed: int = 0, *,
               verifiers: Mapping[str, float] | Iterable[str] | None = None,
               answers_optional: str = "", max_prompt_chars: int = 0,
               too_long: str = "refuse") -> list[Task]:
    """A bundled task name (``calculator``), a ``.jsonl`` / ``.json`` / ``.parquet`` file, or a hub
    dataset ``hf:owner/name[:split]`` (split ``train`` by default; rows named ``SOURCE row N``).

    ``verifiers`` (names, or name → weight) are the run's verifiers: a row whose answer one of them
    (weighted above 0) cannot read is refused too, not only a row without an answer.
    ``answers_optional``: why rows without a usable answer are fine for this run (e.g. "the reward
    is a reward model"); they are then kept with one warning that counts them. Empty (default):
    they are refused, every one named by ``FILE:LINE``.

    ``max_prompt_chars`` (0 = no check; :func:`prompt_char_budget` of ``rollout.max_total_tokens``
    gives it): a prompt longer than this many characters cannot fit the token budget, and would be
    tokenised again at every episode reset before being cut (a 50 MB prompt made a one-step run
    take minutes). Such rows are counted and the first named by ``FILE:LINE``, from their length
    alone, without a tokenizer; ``too_long="refuse"`` (default) raises, ``"skip"`` drops them with
    one warning. Skipped rows keep their place in the ids (``<source>:<row>``).
    """
    if too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {', '.join(TOO_LONG)}, got {too_long!r}")
    if spec in BUNDLED_TASKS:
        tasks = BUNDLED_TASKS[spec](limit or 256, seed)
        return tasks[:limit] if limit else tasks
    if spec.startswith("hf:"):
        located, source = located_rows(spec, limit), spec
        stem = spec[3:].partition(":")[0].rsplit("/", 1)[-1]  # hf:owner/name:split → name
    else:
        path = Path(spec)
        if not path.exists():
            known = ", ".join(sorted(BUNDLED_TASKS))
            raise FileNotFoundError(f"task source {spec!r} is neither a file, a bundled task "
                                    f"({known}) nor hf:owner/name[:split]")
        located, stem, source = read_located_rows(path), path.stem, str(path)
    tasks, wheres, too_big = [], [], []
    for i, (where, row) in enumerate(located):
        if limit and len(tasks) >= limit:
            break
        task = row_to_task(row, f"{stem}:{i}", where=where)
        if max_prompt_chars and (n := prompt_chars(task.prompt)) > max_prompt_chars:
            too_big.append(f"{where}: the prompt has {n:,} characters, over the "
                           f"{max_prompt_chars:,} that can fit the token budget")
            continue
        tasks.append(task)
        wheres.append(where)
    if too_big:
        _too_long(too_big, len(tasks) + len(too_big), source, too_long)
    check_answers(tasks, wheres, verifiers=verifiers, answers_optional=answers_optional,
                  source=source)
    return tasks


def _too_long(bad: list[str], total: int, source: str, too_long: str) -> None:
    if too_long == "skip":
        log.warning("%s: skipped %d of %d rows whose prompt cannot fit the token budget "
                    "(first: %s)", source, len(bad), total, bad[0])
        return
    raise DataError(summarize_errors(bad, total, source, "have a prompt too long for the token "
                                                         "budget") +
                    "\n(data.too_long: skip drops them; rollout.max_total_tokens is the budget)")


# -- reference answers -----------------------------------------------------------------------------

def answer_problem(answer: Any, verifiers: Mapping[str, float] | Iterable[str] | None = None) -> str:
    """Why no completion can ever be rewarded against ``answer``; "" when one can.

    Without ``verifiers`` only what no verifier can reward is a problem: a null or blank answer.
    With them, each verifier weighted above 0 that declares a ``check_answer`` (see
    :func:`rlvr.core.registry.verifier`) is asked too, e.g. ``qa_em`` refuses an object that holds no
    gold text."""
    if answer is None:
        return "'answer' is null: no verifier can reward a row without a reference answer"
    if isinstance(answer, str) and not answer.strip():
        return "'answer' is empty: no verifier can reward a row without a reference answer"
    if not verifiers:
        return ""

    weights = verifiers if isinstance(verifiers, Mapping) else {n: 1.0 for n in verifiers}
    for name, weight in weights.items():
        check = getattr(VERIFIERS.get(name), "check_answer", None)
        if weight and check is not None:
            why = check(answer)
            if why:
                return f"verifier {name!r} can never reward it: {why}"
    return ""


def check_answers(tasks: list[Task], wheres: list[str], *,
                  verifiers: Mapping[str, float] | Iterable[str] | None = None,
                  answers_optional: str = "", source: str = "") -> None:
    """Refuse tasks whose answer can never be rewarded (one error naming each ``FILE:LINE``), or,
    with ``answers_optional``, keep them with one warning that counts them."""
    bad = [f"{where}: {why}" for task, where in zip(tasks, wheres)
           if (why := answer_problem(task.answer, verifiers))]
    if not bad:
        return
    if answers_optional:
        log.warning("%s: %d of %d rows have no reference answer a verifier can use (first: %s); "
                    "kept because %s", source, len(bad), len(tasks), bad[0], answers_optional)
        return
    raise DataError(summarize_errors(bad, len(tasks), source, "can never be rewarded"))


def summarize_errors(bad: list[str], total: int, source: str, what: str = "bad") -> str:
    """One bad row: its message. Several: a count line, then the first few, each ``FILE:LINE: ...``."""
    if len(bad) == 1:
        return bad[0]
    shown = "\n  ".join(bad[:SHOWN_ERRORS])
    more = f"\n  ... and {len(bad) - SHOWN_ERRORS} more" if len(bad) > SHOWN_ERRORS else ""
    return f"{source}: {len(bad)} of {total} rows {what}:\n  {shown}{more}"


#: where a row's prompt is read, first present wins: rlvr / TRL, Search-R1, MATH, original MBPP
PROMPT_FIELDS = ("messages", "prompt", "question", "problem", "text")
#: fields that are the prompt in every layout, so never copied to ``Task.info``
_PROMPT_ONLY = ("messages", "prompt", "question")


def row_answer(row: dict) -> tuple[str, Any] | None:
    """``(field, value)`` of a row's reference answer, first present wins: ``answer``,
    ``golden_answers`` (Search-R1), ``solution`` (MATH), ``test`` when the row has an
    ``entry_point`` (HumanEval; a bare ``test`` column means other things elsewhere), ``test_list``
    (MBPP). None when the row has none of them."""
    for key in ("answer", "golden_answers", "solution"):
        if key in row:
            return key, row[key]
    if "test" in row and "entry_point" in row:
        return "test", row["test"]
    if "test_list" in row:
        return "test_list", row["test_list"]
    return None


def row_to_task(row: dict, task_id: str, where: str = "") -> Task:
    """One row → a :class:`Task`: the prompt from the first of :data:`PROMPT_FIELDS`, the answer
    from :func:`row_answer`, every other field in ``info``. Fields the environments read stay in
    ``info`` even when they are the answer (HumanEval's ``test`` and ``entry_point``, MBPP's
    ``test_list`` and ``test_setup_code``, MATH's ``solution``, see ``environments/code.py``)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    source = next((k for k in PROMPT_FIELDS if row.get(k)), None)
    if source is None:
        raise DataError(f"{where}: no prompt: expected one of the fields "
                        + ", ".join(repr(k) for k in PROMPT_FIELDS))
    found = row_answer(row)
    if found is None:
        raise DataError(f"{where}: no answer: expected 'answer', 'golden_answers', 'solution' "
                        f"(MATH), 'test' with 'entry_point' (HumanEval) or 'test_list' (MBPP)")
    answer_key, answer = found
    drop = {*_PROMPT_ONLY, source, "id"} | ({answer_key} & {"answer", "golden_answers"})
    info = {k: v for k, v in row.items() if k not in drop}
    try:
        return Task(row[source], answer, info, id=task_id)
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}: {e}") from None
