"""The ``math`` environment: one turn, the final answer in ``\\boxed{}``, checked by math-verify.

    system:    Please reason step by step, and put your final answer within \\boxed{}.
    user:      Natalia sold clips to 48 of her friends in April, and then she sold half as many ...
    assistant: ... 48 + 24 = 72 clips in all. The answer is \\boxed{72}.   ← EOS ends the episode

The prompt goes through the model's chat template (a system message from the ``system_prompt``
setting, then the task's text as the user's); a task whose prompt is already chat messages is used
as is. The reward is the ``math`` verifier (:mod:`rlvr.verifiers.math`): the completion's last
``<answer>`` (a ``\\boxed{}`` inside it preferred), else its last ``\\boxed{}``, else GSM8K's
``####``, compared with the reference textually and then through math-verify in a worker process.
``format_weight`` adds a reward for stating a final answer the verifier can find at all, right or
wrong (a shaping term for small models that do not box their answers yet).

Rows (see docs/math.md):

- GSM8K: ``question`` and ``answer``, a worked solution ending in ``#### 72``; the reference is the
  number after ``####``.
- MATH: ``problem`` and ``solution``, a worked solution with the answer in ``\\boxed{}``; the
  reference is the last boxed expression. A row with its own ``answer`` column (MATH-500) uses it.
- Plain: ``prompt`` / ``question`` and ``answer`` already the final answer (or a list of them).
"""

from __future__ import annotations

from typing import Any

import rlvr
from rlvr.core.environment import Environment
from rlvr.core.scoring import combine
from rlvr.core.types import Score, Task
from rlvr.verifiers.extract import final_math_answer, gsm8k_answer, last_boxed

#: Qwen2.5-Math's chat prompt, the one most open math RL recipes (SimpleRL, Dr. GRPO) train with.
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def reference_answer(task: Task) -> Any:
    """The final answer a completion is checked against: GSM8K's ``####`` number or the last
    ``\\boxed{}`` of a worked solution (``answer``, else MATH's ``solution`` in ``info``); any
    other answer (a bare value, a list of accepted ones) as it is. None when there is none."""
    answer = task.answer
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        answer = task.info.get("solution")
    if not isinstance(answer, str):
        return answer
    if "####" in answer:
        return gsm8k_answer(answer)
    if "\\boxed" in answer or "\\fbox" in answer:
        return last_boxed(answer)
    return answer.strip()


def states_final_answer(completion: str) -> bool:
    """Whether the completion states a final answer the ``math`` verifier can find."""
    answer, _ = final_math_answer(completion)
    return bool(answer and answer.strip())


@rlvr.environment("math")
class MathEnv(Environment):
    """Single-turn math: reason, put the final answer in \\boxed{}; reward = math-verify."""

    verifiers = {"math": 1.0}
    system_prompt = DEFAULT_SYSTEM_PROMPT
    #: weight of a reward for stating a final answer the verifier can find, right or wrong (0 = off)
    format_weight: float = 0.0

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.format_weight < 0:
            raise ValueError(f"{type(self).__name__}: setting format_weight must be >= 0, "
                             f"got {self.format_weight}")

    def reset(self, task: Task) -> str | list[dict[str, str]]:
        ref = reference_answer(task)
        if ref is None or ref == "" or ref == []:
            raise ValueError(f"task {task.id}: no reference answer: give 'answer' (a value, or a "
                             f"GSM8K solution ending in '#### N') or MATH's 'solution' with a "
                             f"\\boxed{{}} answer")
        return super().reset(task)

    def score(self, completion: str, task: Task) -> Score:
        s = combine(self.verifiers, completion, reference_answer(task), **task.info)
        if not self.format_weight:
            return s
        stated = float(states_final_answer(completion))
        return Score(s.reward + self.format_weight * stated, s.correct,
                     {**s.parts, "format": stated}, s.reason)
