"""Code environments: the policy writes Python that the ``code`` verifier runs in the sandbox.

``code`` is single turn: the reply's last fenced block is the solution.

``code_multiturn`` lets the policy try its code before it commits::

    assistant: <run>```python ... ```</run>         ← a turn ends at </run>
    env:       <feedback>1/3 tests passed; case 1: wrong_answer
               input: '2' expected: '4' got: '5'</feedback>   ← observation, loss_mask = 0
    assistant: <submit>```python ... ```</submit>   ← </submit> ends the episode

Runs use ``task.info["public_tests"]`` when the task has them (so the reward's tests stay hidden),
else the task's own tests. The reward is the ``code`` verifier on the submitted code (or the last
code run, when the turn budget ``max_attempts`` runs out first) against the task's tests.

Task layouts (fields of the verifier, see ``rlvr.verifiers.code``; :func:`code_reference` reads
them):

- rlvr's own: ``prompt`` (the task text) and ``answer`` (stdin/stdout cases, asserts or test code),
  optional ``entry_point``, ``setup``, ``public_tests``, ``timeout_s``, ``memory_mb``;
- HumanEval (``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``): the
  prompt is the function header, shown in a fence; the tests are ``test`` (or ``answer``); the
  header is prepended to the policy's code, so a body alone or a whole function both run;
- MBPP (``prompt`` or ``text``, ``code``, ``test_list``, ``test_setup_code`` or
  ``test_imports``): the asserts of ``test_list`` are the tests and, as in the MBPP paper's
  prompt, are shown under the task so the policy knows the function's name and signature.

Both code environments check when the run starts (:meth:`CodeEnv.preflight`) that the sandbox
backend can run a probe program here (what ``rlvr sandbox check`` prints).
"""

from __future__ import annotations

from typing import Any

import rlvr
from rlvr.core.environment import Environment, StepResult
from rlvr.core.scoring import combine
from rlvr.core.types import Score, Task, ToolCall
from rlvr.verifiers.code import extract_code, run_tests
from rlvr.verifiers.sandbox import SandboxUnavailable, get_backend

#: The user message of a HumanEval task: its function header, fenced, to be completed.
HUMANEVAL_TEMPLATE = "Complete the following Python function.\n\n```python\n{header}```"
#: The user message of an MBPP task: the text, then its asserts (MBPP's own prompt shows them).
MBPP_TEMPLATE = "{text}\nYour code should pass these tests:\n\n{tests}"

_SANDBOX_WORKS: set[int] = set()  # ids of backends whose probe already ran in this process


def code_reference(task: Task) -> tuple[Any, dict[str, Any]]:
    """``(tests, verifier info)`` of a task in any of the layouts of the module docstring.

    Tests: ``task.answer``, else HumanEval's ``test``, else MBPP's ``test_list`` (all in
    ``task.info`` as the loader leaves them). Info: ``task.info`` plus, for a task with an
    ``entry_point`` and a text prompt, ``prompt`` = the header (the verifier prepends it to the
    code), and ``setup`` from MBPP's ``test_setup_code`` or ``test_imports``."""
    info = dict(task.info)
    tests = task.answer
    if tests is None or (isinstance(tests, str) and not tests.strip()):
        tests = info.get("test") or info.get("test_list")
    if tests is None or tests == "" or tests == []:
        raise ValueError(f"task {task.id}: no tests: give 'answer', HumanEval's 'test' or MBPP's "
                         f"'test_list'")
    if info.get("entry_point") and "prompt" not in info and isinstance(task.prompt, str):
        info["prompt"] = task.prompt
    if not info.get("setup"):
        imports = info.get("test_imports")
        setup = info.get("test_setup_code") or ("\n".join(imports) if isinstance(imports, list) else "")
        if setup:
            info["setup"] = setup
    return tests, info


def code_prompt(task: Task) -> str | list[dict[str, str]]:
    """The user's text of a task: a HumanEval header in a fence, an MBPP text with its asserts,
    anything else as written."""
    if not isinstance(task.prompt, str):
        return task.prompt
    if task.info.get("entry_point"):
        return HUMANEVAL_TEMPLATE.format(header=task.prompt)
    tests = task.info.get("test_list")
    if isinstance(tests, list) and tests:
        return MBPP_TEMPLATE.format(text=task.prompt.strip(), tests="\n".join(map(str, tests)))
    return task.prompt


def check_sandbox(env_name: str) -> None:
    """The process-wide sandbox backend (the one the ``code`` verifier uses) must run a probe
    program; a ValueError saying why, and how to look closer, if not. Once per backend."""
    try:
        backend = get_backend()
        if id(backend) in _SANDBOX_WORKS:
            return
        report = backend.check()
    except SandboxUnavailable as e:
        raise ValueError(f"environment {env_name}: the code sandbox is unavailable: {e} "
                         f"(`rlvr sandbox check` shows the details; RLVR_SANDBOX picks the "
                         f"backend)") from None
    if not report.get("works"):
        warnings = "; ".join(map(str, report.get("warnings") or [])) or "no warnings"
        raise ValueError(f"environment {env_name}: the code sandbox ({report.get('backend')}) "
                         f"cannot run a probe program here (status {report.get('status')}; "
                         f"{warnings}); `rlvr sandbox check` shows the details, RLVR_SANDBOX "
                         f"picks another backend")
    _SANDBOX_WORKS.add(id(backend))


@rlvr.environment("code")
class CodeEnv(Environment):
    """Single-turn Python: the reply's last fenced block runs against the task's tests."""

    verifiers = {"code": 1.0}
    system_prompt = ("Solve the task in Python. Give the complete solution in one "
                     "```python fenced block.")

    @classmethod
    def preflight(cls, settings: dict[str, Any]) -> None:
        """The sandbox must run programs here, or no reward can ever be computed."""
        check_sandbox(cls.__name__)

    def reset(self, task: Task) -> str | list[dict[str, str]]:
        self.task = task
        code_reference(task)  # a task without tests fails its episode here, by its id
        prompt = code_prompt(task)
        if isinstance(prompt, str) and self.system_prompt:
            return [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": prompt}]
        return prompt

    def score(self, completion: str, task: Task) -> Score:
        tests, info = code_reference(task)
        return combine(self.verifiers, completion, tests, **info)


@rlvr.environment("code_multiturn")
class CodeMultiTurnEnv(CodeEnv):
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
        task = self.task
        if not code.strip():
            self.failed_runs += 1
            return "no code found: put it in a ```python fenced block", ToolCall(
                "run", "", valid=False, error="no code")
        tests, info = code_reference(task)
        tests = info.pop("public_tests", None) or tests
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
        text = completion if self.code is None else f"```python\n{self.code}\n```"
        tests, info = code_reference(task)
        info.pop("public_tests", None)
        return combine(self.verifiers, text, tests, **info)

    def metrics(self) -> dict[str, float]:
        return {"code_runs": float(self.runs), "failed_runs": float(self.failed_runs),
                "last_run_pass_rate": self.last_pass_rate}
