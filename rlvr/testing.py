"""Test helpers that ship with rlvr: a scripted engine for loop tests without a model."""

from __future__ import annotations

from typing import Callable

from rlvr.engines.base import Completion, SamplingParams


class ScriptedEngine:
    """An Engine whose "model" is a function: decoded context so far → this turn's text.

    The text is tokenised, cut right after the first stop string (which stays), then at
    ``max_new_tokens``; a text ending in the tokenizer's EOS token finishes with ``"eos"``. Every
    token gets logprob ``-1.0`` so tests can tell sampled tokens apart.
    """

    def __init__(self, tokenizer, policy: Callable[[str], str]) -> None:
        self.tokenizer = tokenizer
        self.policy = policy
        self.calls: list[list[list[int]]] = []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        self.calls.append([list(p) for p in prompts])
        out = []
        for p in prompts:
            text = self.policy(self.tokenizer.decode(p, skip_special_tokens=False))
            stop = None
            hits = [(text.find(s) + len(s), s) for s in params.stop if s in text]
            if hits:
                end, stop = min(hits)
                text = text[:end]
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            reason = "stop" if stop else "length"
            if ids and ids[-1] == self.tokenizer.eos_token_id:
                reason, stop = "eos", None
            if len(ids) > params.max_new_tokens:
                ids, reason, stop = ids[: params.max_new_tokens], "length", None
            out.append(Completion(ids, [-1.0] * len(ids), reason, stop))
        return out

    def load_weights(self, model_or_state_dict) -> None:
        pass

    def close(self) -> None:
        pass
