"""A multi-turn toy environment: the model may call a calculator before it answers.

    user:      What is 12*7+3?
    assistant: <calc>12*7</calc>            ← a turn ends at the stop string </calc>
    env:       <result>84</result>          ← observation, loss_mask = 0
    assistant: <answer>87</answer>          ← </answer> ends the episode; qa_em scores it

It is also the worked example of how to write an environment: a class with ``stop_strings``,
``step`` and a registration.
"""

from __future__ import annotations

import ast
import operator
import re

import rlvr
from rlvr.core.environment import Environment, StepResult
from rlvr.core.types import ToolCall

_CALL = re.compile(r"<calc>(.*?)</calc>\s*$", re.S)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_MAX_ABS = 10**12  # keeps a hostile expression from building huge integers


def safe_eval(expr: str) -> int:
    """Integer arithmetic (+ - * // % and parentheses) on untrusted text; raises ValueError."""
    if len(expr) > 200:
        raise ValueError("expression longer than 200 characters")
    try:
        tree = ast.parse(expr.strip().replace("/", "//").replace("////", "//"), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {e.msg}") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
                raise ValueError("division by zero")
            v = _OPS[type(node.op)](a, b)
            if abs(v) > _MAX_ABS:
                raise ValueError("result too large")
            return v
        raise ValueError(f"unsupported element {type(node).__name__}")

    return ev(tree)


@rlvr.environment("calculator")
class CalculatorEnv(Environment):
    """Arithmetic questions; <calc>expr</calc> returns <result>value</result>; <answer> ends."""

    stop_strings = ["</calc>", "</answer>"]
    verifiers = {"qa_em": 1.0}
    system_prompt = ("Use <calc>expression</calc> to compute, then give the final number as "
                     "<answer>number</answer>.")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        self.calls = 0
        self.invalid = 0

    def step(self, action: str) -> StepResult:
        if action.rstrip().endswith("</answer>"):
            return StepResult(done=True)
        m = _CALL.search(action)
        expr = m.group(1) if m else ""
        self.calls += 1
        try:
            result = str(safe_eval(expr))
            call = ToolCall("calc", expr)
        except ValueError as e:
            self.invalid += 1
            result = f"error: {e}"
            call = ToolCall("calc", expr, valid=False, error=str(e))
        return StepResult(observation=f"<result>{result}</result>", tool_call=call)

    def metrics(self) -> dict[str, float]:
        return {"tool_calls": float(self.calls), "invalid_calls": float(self.invalid)}
