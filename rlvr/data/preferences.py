"""Preference and SFT datasets: rows in the formats TRL and the hub use, turned into token ids.

Preference rows (``prompt`` optional for conversational rows, as in TRL's "implicit prompt" form)::

    {"prompt": "What is 2+3?", "chosen": "<answer>5</answer>", "rejected": "6"}
    {"prompt": [{"role": "user", "content": "What is 2+3?"}],
     "chosen": [{"role": "assistant", "content": "<answer>5</answer>"}],
     "rejected": [{"role": "assistant", "content": "6"}]}
    {"chosen": [user, assistant_a], "rejected": [user, assistant_b]}   # shared prefix = prompt

SFT rows: ``prompt`` + ``completion`` (text or messages), ``messages`` (a whole conversation: every
assistant turn is trained, everything else is not), or pre-tokenised ``token_ids`` + ``loss_mask``
(written by :mod:`rlvr.rollout.rejection`; exact, including masked tool observations).

Messages go through the tokenizer's chat template; plain text is encoded as is and an EOS token is
appended to completions so the model learns to stop. Sources: a bundled synthetic name
(``synthetic_pref``, ``synthetic_sft``), a local ``.jsonl`` / ``.json`` / ``.parquet`` file, or a hub
dataset ``hf:owner/name[:split]``. Local ``.jsonl`` / ``.json`` files are read line by line by
:func:`rlvr.data.rows.read_located_rows`; parquet and hub data through ``datasets``. Bad rows raise one
error that lists each as ``FILE:LINE`` (the 1-based line, as editors count; ``SOURCE row N``,
counted from 1, for parquet, hub and bundled tables, which have no lines).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlvr.core.registry import ENVIRONMENTS
from rlvr.core.types import Trajectory
from rlvr.data.rows import located_rows

Messages = list[dict[str, str]]


# -- bundled synthetic data ------------------------------------------------------------------------


def _arith(rng: random.Random) -> tuple[str, int]:
    a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice("+-*")
    return f"{a}{op}{b}", a + b if op == "+" else a - b if op == "-" else a * b


def synthetic_preference_rows(n: int = 256, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic prompts; the chosen reply answers in ``<answer>`` tags, the rejected one does
    not (a bare wrong number, a refusal, or an untagged sentence). A format preference a tiny model
    learns in seconds."""
    rng = random.Random(seed)
    # the calculator environment's own, so a reward model trained on these rows transfers to it
    system = ENVIRONMENTS.get("calculator").system_prompt
    rows = []
    for _ in range(n):
        expr, v = _arith(rng)
        bad = rng.choice([str(v + rng.randint(1, 9)), "I do not know.", f"The answer is {v}"])
        rows.append({
            "prompt": [{"role": "system", "content": system},
                       {"role": "user", "content": f"What is {expr}?"}],
            "chosen": [{"role": "assistant", "content": f"<answer>{v}</answer>"}],
            "rejected": [{"role": "assistant", "content": bad}],
        })
    return rows


def synthetic_sft_rows(n: int = 256, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic prompts with the tagged answer as the completion (conversational)."""
    return [{"prompt": r["prompt"], "completion": r["chosen"]}
            for r in synthetic_preference_rows(n, seed)]


BUNDLED: dict[str, Callable[[int, int], list[dict[str, Any]]]] = {
    "synthetic_pref": synthetic_preference_rows,
    "synthetic_sft": synthetic_sft_rows,
}


# -- reading rows ----------------------------------------------------------------------------------

def load_rows(spec: str, limit: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of a bundled name, a local JSONL / JSON / parquet file, or ``hf:owner/name[:split]``."""
    return [row for _, row in load_located_rows(spec, limit, seed)]


def load_located_rows(spec: str, limit: int = 0, seed: int = 0) -> list[tuple[str, Any]]:
    """``(where, row)`` pairs of :func:`load_rows`: ``where`` is ``FILE:LINE`` for JSONL / JSON
    files, ``SOURCE row N`` (from 1) for tables without lines."""
    return located_rows(spec, limit, bundled=BUNDLED, seed=seed)


def _collect_errors(rows: list[tuple[str, Any]], fn, source: str) -> list:
    """Apply ``fn(row, index)`` to every ``(where, row)``; raise once, naming every bad row by its
    ``where`` (``FILE:LINE``)."""
    out, bad = [], []
    for i, (where, row) in enumerate(rows):
        try:
            out.append(fn(row, i))
        except (ValueError, TypeError, KeyError) as e:
            bad.append(f"{where}: {e}")
    if bad:
        shown = "\n  ".join(bad[:5]) + (f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{source}: {len(bad)} bad row(s) of {len(rows)}:\n  {shown}")
    return out


# -- text / messages → token ids -------------------------------------------------------------------

def _is_messages(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(m, dict) for m in x)


def _check_messages(x: Any, field: str) -> Messages:
    if not isinstance(x, list) or not x:
        raise ValueError(f"'{field}' must be text or a non-empty list of messages")
    for j, m in enumerate(x):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"'{field}' message {j} must have string 'role' and 'content', got {m!r:.80}")
    return x


def _render(tokenizer, messages: Messages, add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the row is conversational but the tokenizer has no chat template")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                         tokenize=False)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _prompt_completion_ids(tokenizer, prompt, completion, field: str) -> tuple[list[int], list[int]]:
    """Token ids of a prompt and one completion, both text or both messages."""
    if isinstance(prompt, str) and isinstance(completion, str):
        ids = _encode(tokenizer, completion)
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids = ids + [tokenizer.eos_token_id]
        return _encode(tokenizer, prompt), ids
    if _is_messages(prompt) and _is_messages(completion):
        prompt_text = _render(tokenizer, prompt, add_generation_prompt=True)
        full = _render(tokenizer, prompt + completion, add_generation_prompt=False)
        if not full.startswith(prompt_text):
            raise ValueError(f"the chat template does not render prompt + '{field}' as an extension "
                             f"of the prompt, so the completion tokens cannot be isolated")
        reply, _tail = _split_after_eos(tokenizer, full[len(prompt_text):])
        return _encode(tokenizer, prompt_text), _encode(tokenizer, reply)
    raise ValueError(f"'prompt' and '{field}' must both be text or both be message lists")


def _split_after_eos(tokenizer, reply: str) -> tuple[str, str]:
    """``"text<|im_end|>\\n"`` → ``("text<|im_end|>", "\\n")``: a reply ends at EOS, as a sampled one
    does (generation stops there), so what a template writes after it is not trained."""
    eos = tokenizer.eos_token
    stripped = reply.rstrip()
    if eos and stripped.endswith(eos) and stripped != reply:
        return stripped, reply[len(stripped):]
    return reply, ""


def _fit(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut to ``max_length``: the prompt keeps its last half-budget tokens, the completion its start."""
    if max_length and len(prompt_ids) + len(completion_ids) > max_length:
        prompt_ids = prompt_ids[-max(1, min(len(prompt_ids), max_length // 2)):]
        completion_ids = completion_ids[: max_length - len(prompt_ids)]
    return prompt_ids, completion_ids


# -- preference data -------------------------------------------------------------------------------

@dataclass
class PrefExample:
    """One tokenised preference pair (prompt ids shared by both responses)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    index: int = 0  # 0-based row index in its source

    def chosen_seq(self) -> tuple[list[int], list[int]]:
        """``(token_ids, loss_mask)`` of prompt + chosen; loss only on the response."""
        return (self.prompt_ids + self.chosen_ids,
                [0] * len(self.prompt_ids) + [1] * len(self.chosen_ids))

    def rejected_seq(self) -> tuple[list[int], list[int]]:
        return (self.prompt_ids + self.rejected_ids,
                [0] * len(self.prompt_ids) + [1] * len(self.rejected_ids))


def split_preference_row(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    """→ ``(prompt, chosen, rejected)``, extracting the shared message prefix as the prompt when a
    conversational row has none."""
    if not isinstance(row, dict):
        raise TypeError(f"expected an object, got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise ValueError(f"missing '{key}'")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    for key, val in (("chosen", chosen), ("rejected", rejected), ("prompt", prompt)):
        if isinstance(val, str):
            if key != "prompt" and not val.strip():
                raise ValueError(f"'{key}' is empty")
        elif val is not None:
            _check_messages(val, key)
    if prompt is None:
        if not (_is_messages(chosen) and _is_messages(rejected)):
            raise ValueError("missing 'prompt' (only conversational rows may leave it out)")
        k = 0
        while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
            k += 1
        if k == 0:
            raise ValueError("no 'prompt' and 'chosen' / 'rejected' share no leading messages")
        prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
    return prompt, chosen, rejected


def tokenize_preference_row(row: dict[str, Any], tokenizer, max_length: int = 0, index: int = 0) -> PrefExample:
    prompt, chosen, rejected = split_preference_row(row)
    p_ids, c_ids = _prompt_completion_ids(tokenizer, prompt, chosen, "chosen")
    p2_ids, r_ids = _prompt_completion_ids(tokenizer, prompt, rejected, "rejected")
    if p_ids != p2_ids:  # cannot happen with one prompt; guards a tokenizer that is not deterministic
        raise ValueError("prompt tokenises differently for chosen and rejected")
    if not c_ids or not r_ids:
        raise ValueError("'chosen' or 'rejected' renders to no tokens")
    p, c = _fit(p_ids, c_ids, max_length)
    _, r = _fit(p_ids, r_ids, max_length)
    return PrefExample(p, c, r, index)


def load_preference_data(spec: str, tokenizer, *, limit: int = 0, max_length: int = 0,
                         seed: int = 0) -> list[PrefExample]:
    """Load and tokenise preference pairs; every bad row is reported by ``FILE:LINE``."""
    rows = load_located_rows(spec, limit, seed)
    return _collect_errors(rows, lambda r, i: tokenize_preference_row(r, tokenizer, max_length, i), spec)


# -- SFT data --------------------------------------------------------------------------------------

def _messages_segments(tokenizer, messages: Messages) -> tuple[list[int], list[int]]:
    """A whole conversation → ``(token_ids, loss_mask)``: assistant replies 1, all else 0."""
    ids: list[int] = []
    mask: list[int] = []
    done_text = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        body = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not head.startswith(done_text) or not body.startswith(head):
            raise ValueError(f"the chat template re-renders earlier turns differently at message {i}; "
                             f"give prompt/completion rows instead")
        reply_text, tail = _split_after_eos(tokenizer, body[len(head):])
        ctx, reply = _encode(tokenizer, head[len(done_text):]), _encode(tokenizer, reply_text)
        after = _encode(tokenizer, tail) if tail else []
        ids += ctx + reply + after
        mask += [0] * len(ctx) + [1] * len(reply) + [0] * len(after)
        done_text = body
    if not any(mask):
        raise ValueError("'messages' has no assistant message to train on")
    return ids, mask


def sft_row_to_trajectory(row: dict[str, Any], tokenizer, max_length: int = 0, task_id: str = "") -> Trajectory:
    """One SFT row → a :class:`Trajectory` whose ``loss_mask`` marks the completion tokens."""
    if not isinstance(row, dict):
        raise TypeError(f"expected an object, got {type(row).__name__}")
    if row.get("token_ids") is not None:
        ids, mask = list(row["token_ids"]), list(row.get("loss_mask") or [])
        if len(mask) != len(ids):
            raise ValueError(f"'loss_mask' ({len(mask)}) and 'token_ids' ({len(ids)}) differ in length")
        if any(not isinstance(t, int) or not 0 <= t < len(tokenizer) for t in ids):
            raise ValueError("'token_ids' holds ids outside this tokenizer's vocabulary")
    elif row.get("messages") is not None:
        ids, mask = _messages_segments(tokenizer, _check_messages(row["messages"], "messages"))
    elif row.get("completion") is not None:
        prompt = row.get("prompt")
        if prompt is None:
            raise ValueError("a 'completion' needs a 'prompt'")
        if not isinstance(prompt, str):
            _check_messages(prompt, "prompt")
        if not isinstance(row["completion"], str):
            _check_messages(row["completion"], "completion")
        p, c = _prompt_completion_ids(tokenizer, prompt, row["completion"], "completion")
        ids, mask = p + c, [0] * len(p) + [1] * len(c)
    else:
        raise ValueError("expected 'prompt' + 'completion', 'messages', or 'token_ids' + 'loss_mask'")
    if max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask):
        raise ValueError("no completion tokens left to train on (is max_length too small?)")
    prompt_len = mask.index(1)
    return Trajectory(ids, [int(bool(x)) for x in mask], [0.0] * len(ids), prompt_len, task_id=task_id)


def load_sft_data(spec: str, tokenizer, *, limit: int = 0, max_length: int = 0,
                  seed: int = 0) -> list[Trajectory]:
    """Load and tokenise SFT rows as trajectories; every bad row is reported by ``FILE:LINE``."""
    rows = load_located_rows(spec, limit, seed)
    name = Path(spec).stem if not spec.startswith("hf:") else spec[3:]
    return _collect_errors(
        rows, lambda r, i: sft_row_to_trajectory(r, tokenizer, max_length, f"{name}:{i}"), spec)
