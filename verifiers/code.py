"""The ``code`` verifier: run model-written Python in the sandbox against tests.

    verify("code", completion, answer, **info)

``completion``: the model's text. The code is the last fenced block (```` ```python ```` or a bare
fence; an unclosed last fence, as a cut-off completion leaves, counts to the end), else the whole
completion.

``answer``: the tests, in one of four forms (a JSON string of the list / dict forms works too):

- ``[{"input": "1 2\\n", "output": "3\\n"}, ...]`` — stdin/stdout cases (competitive programming);
  outputs are compared token by token, so spaces, tabs and line ends do not matter;
- ``{"inputs": [...], "outputs": [...]}`` — the same cases in APPS / CodeContests layout;
- ``"def check(candidate): ..."`` — HumanEval-style test code; with ``info["entry_point"]`` the
  program is ``prompt + code + test + check(entry_point)``; without it the test code runs as is;
- ``["assert f(1) == 2", ...]`` — MBPP-style assert statements, each one a test.

``info`` (all optional): ``prompt`` (prepended to the code: the HumanEval function header),
``entry_point``, ``setup`` (code run before the tests, e.g. MBPP's ``test_setup_code``),
``timeout_s`` (per program run; default 5), ``memory_mb`` (default 512).

Reward = fraction of tests passed; ``correct`` = all passed. ``Score.parts`` reports
``pass_rate``, ``compile_error`` (0 or 1) and the fractions of tests with a ``wrong_answer``,
``runtime_error`` or ``timeout``; ``reason`` names the first failures.

An assert-style run passes only if it prints a random per-run marker after the last test, so a
program that exits early with status 0 (``sys.exit(0)`` before the tests) earns nothing.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import rlvr
from rlvr.core.types import Score
from rlvr.verifiers.sandbox import Job, Limits, SandboxPool, get_backend
from rlvr.verifiers.sandbox.pool import PerProcess

MAX_CODE_CHARS = 100_000  # longer "code" is not a solution, and compiling it costs time
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_LANGS = {"", "python", "py", "python3", "py3"}

_pool = PerProcess(lambda: SandboxPool(get_backend(), workers=2))


def extract_code(completion: str) -> str:
    """The last fenced Python (or unlabelled) block of ``completion``, else the whole text."""
    text = re.sub(r"<think>.*?</think>", "", completion, flags=re.S)
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    py = [body for lang, body in blocks if lang in _CODE_LANGS]
    if py:
        return py[-1]
    if blocks:
        return blocks[-1][1]
    return text


def get_pool() -> SandboxPool:
    """The shared pool that runs this verifier's programs (the default sandbox backend), one per
    process."""
    return _pool.get()


def parse_tests(answer: Any) -> tuple[str, Any]:
    """``answer`` → ``("io", [(input, output), ...])``, ``("asserts", [str, ...])`` or
    ``("check", str)``; raises ValueError naming what was expected."""
    if isinstance(answer, str) and answer.lstrip()[:1] in ("[", "{"):
        try:
            answer = json.loads(answer)
        except ValueError:
            pass  # test code that happens to start with a bracket
    if isinstance(answer, dict):
        if "inputs" in answer and "outputs" in answer:
            ins, outs = answer["inputs"], answer["outputs"]
            if len(ins) != len(outs):
                raise ValueError(f"code tests: {len(ins)} inputs but {len(outs)} outputs")
            return "io", [(_text(i), _text(o)) for i, o in zip(ins, outs)]
        raise ValueError("code tests: a dict answer needs 'inputs' and 'outputs'")
    if isinstance(answer, str):
        if not answer.strip():
            raise ValueError("code tests: the test code is empty")
        return "check", answer
    if isinstance(answer, (list, tuple)) and answer:
        if all(isinstance(t, str) for t in answer):
            return "asserts", list(answer)
        if all(isinstance(t, dict) and "input" in t and "output" in t for t in answer):
            return "io", [(_text(t["input"]), _text(t["output"])) for t in answer]
    raise ValueError("code tests: answer must be a list of {'input','output'} cases, "
                     "{'inputs','outputs'}, a list of assert strings or test code; got "
                     f"{type(answer).__name__} {str(answer)[:60]!r}")


def _text(x: Any) -> str:
    if isinstance(x, list):
        return "\n".join(str(v) for v in x) + "\n"
    return str(x)


def same_output(got: str, expected: str) -> bool:
    """Whitespace-tolerant comparison: equal token sequences."""
    return got.split() == expected.split()


def compile_error(program: str) -> str | None:
    """The compiler's complaint about ``program``, or None when it compiles."""
    try:
        compile(program, "main.py", "exec")
    except SyntaxError as e:
        return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _assert_program(code: str, tests: list[str], setup: str, marker: str) -> str:
    # each test runs in the program's globals; a marker line records its verdict
    return (f"{setup}\n{code}\n\n"
            f"def _rlvr_run_tests(_tests, _g):\n"
            f"    for _i, _src in enumerate(_tests):\n"
            f"        try:\n"
            f"            exec(_src, _g)\n"
            f"            _v = 'pass'\n"
            f"        except AssertionError:\n"
            f"            _v = 'fail'\n"
            f"        except Exception as _e:\n"
            f"            _v = 'error ' + type(_e).__name__\n"
            f"        print({marker!r}, _i, _v, flush=True)\n"
            f"_rlvr_run_tests({tests!r}, globals())\n")


def run_tests(code: str, answer: Any, info: dict[str, Any], details: list[str] | None = None) -> Score:
    """Build the programs for ``answer``'s tests, run them in the sandbox, tally the verdicts.

    ``details``, when given, receives a few lines about the first failure (input, expected and
    actual output, or the end of the traceback): the feedback of the multi-turn environment."""
    kind, tests = parse_tests(answer)
    prompt = str(info.get("prompt") or "")
    setup = str(info.get("setup") or "")
    timeout_s = float(info.get("timeout_s", 5.0))
    limits = Limits(memory_mb=int(info.get("memory_mb", 512)))
    pool = get_pool()
    marker = "__rlvr_" + secrets.token_hex(8)
    verdicts: list[str] = []  # one per test: pass / wrong_answer / runtime_error / timeout
    notes: list[str] = []

    if kind == "io":
        program = prompt + code if prompt else code
        err = compile_error(program)
        if err:
            return _compile_failure(len(tests), err)
        results = pool.run_many([Job(program, inp, timeout_s, limits) for inp, _ in tests])
        for i, (r, (_, want)) in enumerate(zip(results, tests)):
            v = _io_verdict(r, want)
            verdicts.append(v)
            if v != "pass" and len(notes) < 3:
                notes.append(f"case {i}: {v}" + (f" ({_last_line(r.stderr)})" if r.stderr else ""))
                if details is not None and not details:
                    details += [f"input: {tests[i][0][:300]!r}", f"expected: {want[:300]!r}",
                                f"got: {r.stdout[:300]!r}"]
                    if r.stderr:
                        details.append("stderr: " + "\n".join(r.stderr.strip().splitlines()[-4:]))
            if r.status == "sandbox_error":
                return _sandbox_failure(r)
    else:
        body = prompt + code
        if kind == "check":
            entry = info.get("entry_point")
            tail = f"\n\ncheck({entry})\n" if entry else "\n"
            program = f"{setup}\n{body}\n\n{tests}{tail}print({marker!r}, flush=True)\n"
            n_tests = 1
        else:
            program = _assert_program(body, tests, setup, marker)
            n_tests = len(tests)
        err = compile_error(program)
        if err:
            return _compile_failure(n_tests, err)
        r = pool.run(program, "", timeout_s, limits)
        if r.status == "sandbox_error":
            return _sandbox_failure(r)
        verdicts, notes = _assert_verdicts(r, kind, n_tests, marker)
        if details is not None and r.stderr.strip() and verdicts.count("pass") < n_tests:
            details.append("stderr: " + "\n".join(r.stderr.strip().splitlines()[-4:]))
    n = len(verdicts)
    passed = verdicts.count("pass")
    parts = {"pass_rate": passed / n, "compile_error": 0.0,
             "wrong_answer": verdicts.count("wrong_answer") / n,
             "runtime_error": verdicts.count("runtime_error") / n,
             "timeout": verdicts.count("timeout") / n}
    reason = f"{passed}/{n} tests passed" + (f"; {'; '.join(notes)}" if notes else "")
    return Score(passed / n, passed == n, parts, reason)


def _io_verdict(r, want: str) -> str:
    if r.status == "timeout":
        return "timeout"
    if r.status == "ok":
        return "pass" if same_output(r.stdout, want) else "wrong_answer"
    if r.status == "output_limit":
        return "wrong_answer"
    return "runtime_error"


def _assert_verdicts(r, kind: str, n: int, marker: str) -> tuple[list[str], list[str]]:
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.startswith(marker)]
    fail = "timeout" if r.status == "timeout" else "runtime_error"
    why = _last_line(r.stderr) or r.status
    if kind == "check":
        ok = r.status == "ok" and any(len(ln) == 1 for ln in lines)
        if ok:
            return ["pass"], []
        if r.status == "error" and "AssertionError" in r.stderr:
            return ["wrong_answer"], [f"assertion failed: {why}"]
        return [fail], [why]
    got: dict[int, str] = {}
    for ln in lines:
        if len(ln) >= 3 and ln[1].isdigit():
            got[int(ln[1])] = ln[2]
    verdicts, notes = [], []
    for i in range(n):
        v = got.get(i)
        verdict = {"pass": "pass", "fail": "wrong_answer", "error": "runtime_error"}.get(v, fail)
        verdicts.append(verdict)
        if verdict != "pass" and len(notes) < 3:
            notes.append(f"test {i}: {verdict}" + ("" if v else f" ({why})"))
    return verdicts, notes


def _compile_failure(n: int, err: str) -> Score:
    parts = {"pass_rate": 0.0, "compile_error": 1.0, "wrong_answer": 0.0, "runtime_error": 0.0,
             "timeout": 0.0}
    return Score(0.0, False, parts, f"compile error: {err} (0/{n} tests run)")


def _sandbox_failure(r) -> Score:
    return Score(0.0, False, {"pass_rate": 0.0, "sandbox_error": 1.0},
                 f"sandbox error (not the program's fault): {r.stderr[:200]}")


@rlvr.verifier("code")
def code_verifier(completion: str, answer: Any, **info: Any) -> Score:
    """Run the completion's Python code against stdin/stdout or assert tests; reward = fraction passed."""
    if not isinstance(completion, str):
        return Score(0.0, False, {"pass_rate": 0.0}, f"completion is {type(completion).__name__}")
    code = extract_code(completion)
    if not code.strip():
        return Score(0.0, False, {"pass_rate": 0.0, "compile_error": 1.0}, "no code in the completion")
    if len(code) > MAX_CODE_CHARS:
        return Score(0.0, False, {"pass_rate": 0.0, "compile_error": 1.0},
                     f"code longer than {MAX_CODE_CHARS} characters")
    return run_tests(code, answer, info)
