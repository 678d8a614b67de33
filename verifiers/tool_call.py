"""Tool-call verifiers after ToolRL (Qian et al. 2025, https://arxiv.org/abs/2504.13958).

The completion holds ``<think>…</think>`` then ``<tool_call>…</tool_call>`` whose content is JSON:
one call ``{"name": ..., "parameters": {...}}`` (``"arguments"`` is accepted too), a list of calls,
or one call per line. The gold answer is the same JSON (text or already parsed); an empty list
means "no tool should be called" and the model should answer in ``<response>…</response>``.

``tool_call`` (fine-grained, ToolRL's Eq. for R_correct): for gold calls G and predicted calls P,

    r_name  = |names(G) ∩ names(P)| / |names(G) ∪ names(P)|              (multisets)
    r_param = Σ_j IoU(param names of G_j, param names of its matched P)   ∈ [0, |G|]
    r_value = Σ_j Σ_k 1[G_j[k] == P(G_j)[k]]                              ∈ [0, Σ_j |G_j|]
    S_max   = 1 + |G| + Σ_j |G_j|
    R_correct = 6 · max_matching(r_name + r_param + r_value) / S_max − 3  ∈ [−3, 3]

and a 0/1 ``format`` part; the reward is format + R_correct ∈ [−3, 4]. Gold and predicted calls are
paired one-to-one to maximise the score, and a pair earns parameter credit only when its tool
names agree (a deliberate reading: ToolRL's text is silent on mismatched names).
``tool_call_em`` is the coarse ablation: R_correct = 3 when the calls match exactly (as a multiset,
names and values), else −3, plus the same format part.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rlvr.core.registry import verifier
from rlvr.core.types import Score
from rlvr.verifiers.extract import last_tag

#: Calls beyond this many are ignored (the matching is exponential in the call count).
MAX_CALLS = 10


def parse_calls(payload: Any) -> list[dict] | None:
    """Normalise JSON text or parsed JSON into ``[{"name": str, "parameters": dict}]``, or None
    when it is not a call list."""
    if isinstance(payload, str):
        text = payload.strip()
        if not text:
            return []
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            try:  # one JSON object per line (ToolRL's layout)
                payload = [json.loads(line) for line in text.splitlines() if line.strip()]
            except (ValueError, RecursionError):
                return None
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list):
        return None
    calls = []
    for c in payload[:MAX_CALLS]:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            return None
        params = c.get("parameters", c.get("arguments", {}))
        if isinstance(params, str):  # OpenAI style: arguments as a JSON string
            try:
                params = json.loads(params) if params.strip() else {}
            except (ValueError, RecursionError):
                return None
        if not isinstance(params, dict):
            return None
        calls.append({"name": c["name"], "parameters": params})
    return calls


def _pair_score(g: dict, p: dict) -> float:
    if g["name"] != p["name"]:
        return 0.0
    gk, pk = set(g["parameters"]), set(p["parameters"])
    iou = len(gk & pk) / len(gk | pk) if gk | pk else 1.0
    values = sum(1.0 for k in gk if k in pk and _same(g["parameters"][k], p["parameters"][k]))
    return iou + values


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # JSON true is not 1
        return a is b
    try:
        return bool(a == b)
    except Exception:
        return False


def _best_matching(gold: list[dict], pred: list[dict]) -> float:
    """Max total pair score over one-to-one pairings (DP over subsets of predicted calls)."""
    best: dict[int, float] = {0: 0.0}  # mask of used predicted calls → best score so far
    for g in gold:
        nxt: dict[int, float] = {}
        for mask, s in best.items():
            nxt[mask] = max(nxt.get(mask, float("-inf")), s)  # g left unmatched
            for j, p in enumerate(pred):
                if not mask >> j & 1:
                    m2 = mask | 1 << j
                    nxt[m2] = max(nxt.get(m2, float("-inf")), s + _pair_score(g, p))
        best = nxt
    return max(best.values())


def correctness(gold: list[dict], pred: list[dict]) -> float:
    """ToolRL's R_correct ∈ [−3, 3] (see the module docstring)."""
    gn, pn = Counter(c["name"] for c in gold), Counter(c["name"] for c in pred)
    union = sum((gn | pn).values())
    r_name = sum((gn & pn).values()) / union if union else 1.0
    s_max = 1 + len(gold) + sum(len(c["parameters"]) for c in gold)
    r = r_name + _best_matching(gold, pred)
    return 6.0 * r / s_max - 3.0


def _format_ok(completion: str, gold: list[dict], pred: list[dict] | None) -> tuple[float, str]:
    think_end = completion.find("</think>")
    if completion.find("<think>") < 0 or think_end < 0:
        return 0.0, "no <think>...</think>"
    if gold:
        start = completion.rfind("<tool_call>")
        if pred is None or start < think_end:
            return 0.0, "no parseable <tool_call> after </think>"
    elif last_tag(completion, "response") is None and last_tag(completion, "tool_call") is None:
        return 0.0, "no <response> or <tool_call> after </think>"
    return 1.0, ""


def _score(completion: Any, answer: Any, exact: bool) -> Score:
    if not isinstance(completion, str):
        return Score(-3.0, False, reason=f"completion is {type(completion).__name__}, not text")
    gold = parse_calls(answer if answer is not None else [])
    if gold is None:
        return Score(-3.0, False, reason=f"the gold answer is not a tool-call list: {answer!r:.80}")
    block = last_tag(completion, "tool_call")
    pred = parse_calls(block) if block is not None else []
    fmt, why = _format_ok(completion, gold, pred)
    if exact:
        same = pred is not None and Counter(_key(c) for c in gold) == Counter(_key(c) for c in pred)
        corr = 3.0 if same else -3.0
    else:
        corr = correctness(gold, pred or [])
    ok = corr >= 3.0 - 1e-9
    reasons = [r for r in (why, "" if pred is not None else "tool_call JSON did not parse") if r]
    return Score(fmt + corr, ok, {"format": fmt, "correctness": corr}, "; ".join(reasons))


def _key(call: dict) -> str:
    return json.dumps(call, sort_keys=True, default=str)


@verifier("tool_call")
def tool_call(completion: str, answer: Any, **info: Any) -> Score:
    """ToolRL reward: format (0/1) + name/parameter IoU and exact values mapped to [-3, 3]."""
    return _score(completion, answer, exact=False)


@verifier("tool_call_em")
def tool_call_em(completion: str, answer: Any, **info: Any) -> Score:
    """Coarse ToolRL ablation: format (0/1) + 3 if every call matches exactly, else -3."""
    return _score(completion, answer, exact=True)
