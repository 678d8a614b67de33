"""Code environments: the policy writes Python that the ``code`` verifier runs in the sandbox.

``code`` is single turn: the reply's last fenced block is the solution.

``code_multiturn`` lets the policy try its code before it commits::

    assistant: <run>```python ... ```</run>         ← a turn ends at </run>
    env:       <feedback>1/3 tests passed; case 1: wrong_answer
               input: '2' expected: '4' got: '5'</feedback>   ← observation, loss_mask = 0
    assistant: <submit>```python ... ```</submit>   ← </submit> ends the episode

Runs use ``task.info["public_tests"]`` when the task has them (so the reward's tests stay hidden),
else the task's own tests. The reward is the ``code`` verifier on the submitted code (or the last
code run, when the turn budget ``max_attempts`` runs out first) against ``task.answer``. Task
fields are those of the verifier (see ``rlvr.verifiers.code``).
"""

from __future__ import annotations

import rlvr
from rlvr.environment import Environment, StepResult
from rlvr.types import Score, Task, ToolCall


@rlvr.environment("code")
class CodeEnv(Environment):
    """Single-turn Python: the reply's last fenced block runs against the task's tests."""

    verifiers = {"code": 1.0}
    system_prompt = ("Solve the task in Python. Give the complete solution in one "
                     "```python fenced block.")


@rlvr.environment("code_multiturn")
class CodeMultiTurnEnv(Environment):
    """Python with execution feedback: <run> code to see test results, <submit> the final code."""

    stop_strings = ["</run>", "</submit>"]
    verifiers = {"code": 1.0}
    system_prompt = ("Solve the task in Python. To test a draft, write <run>```python ...```</run> "
                     "and read the <feedback>. When it is right, write "
                     "<submit>```python ...```</submit>.")
    #: code runs allowed; the episode ends after the last one's feedback
    max_attempts: int = 3
    #: longest feedback text (characters) appended after a run
    feedback_chars: int = 800

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.runs = 0
        self.failed_runs = 0
        self.code: str | None = None  # the latest code run or submitted
        self.last_pass_rate = 0.0

    def step(self, action: str) -> StepResult:
        from rlvr.verifiers.code import extract_code

        tail = action.rstrip()
        body = tail[: tail.rfind("<")] if tail.endswith(("</run>", "</submit>")) else tail
        for tag in ("<run>", "<submit>"):
            if tag in body:
                body = body[body.rfind(tag) + len(tag):]
        code = extract_code(body)
        if tail.endswith("</submit>"):
            self.code = code
            return StepResult(done=True, tool_call=ToolCall("submit", code[:200]))
        self.runs += 1
        self.code = code
        text, call = self._feedback(code)
        done = self.runs >= self.max_attempts
        return StepResult(observation=f"<feedback>{text}</feedback>", done=done, tool_call=call)

    def _feedback(self, code: str) -> tuple[str, ToolCall]:
        from rlvr.verifiers.code import run_tests

        task = self.task
        if not code.strip():
            self.failed_runs += 1
            return "no code found: put it in a ```python fenced block", ToolCall(
                "run", "", valid=False, error="no code")
        tests = task.info.get("public_tests") or task.answer
        info = {k: v for k, v in task.info.items() if k != "public_tests"}
        details: list[str] = []
        try:
            s = run_tests(code, tests, info, details)
        except Exception as e:  # bad task data: the episode goes on, the message says why
            self.failed_runs += 1
            return f"could not run the tests: {e}", ToolCall("run", code[:200], valid=False,
                                                             error=str(e))
        self.last_pass_rate = s.parts.get("pass_rate", 0.0)
        if not s.correct:
            self.failed_runs += 1
        text = "\n".join([s.reason] + details)
        if len(text) > self.feedback_chars:
            text = text[: self.feedback_chars] + " ..."
        return text, ToolCall("run", code[:200])

    def score(self, completion: str, task: Task) -> Score:
        """The ``code`` verifier on the final code (or, with no turn ended by a tag, the reply)."""
        from rlvr.scoring import combine

        text = completion if self.code is None else f"```python\n{self.code}\n```"
        return combine(self.verifiers, text, task.answer, **task.info)

    def metrics(self) -> dict[str, float]:
        return {"code_runs": float(self.runs), "failed_runs": float(self.failed_runs),
                "last_run_pass_rate": self.last_pass_rate}
