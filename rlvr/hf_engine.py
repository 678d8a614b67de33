"""HFEngine: the reference Engine on transformers, for CPU and one GPU.

Batched incremental decoding with a KV cache over left-padded prompts. Each step samples from
``softmax(logits / temperature)`` restricted to the top-p nucleus and records
``log_softmax(logits / temperature)`` of the sampled token — the value the learner recomputes from
the final sequence (top-p only narrows where samples come from). Greedy when temperature is 0.
Stop strings are matched on the decoded tail of each sequence, so a string that spans several
tokens stops generation right after the token that completes it; the stop string stays in the
output. On CPU the engine shares the training model object, so no weight sync is needed.
"""

from __future__ import annotations

import torch

from rlvr.engine import Completion, SamplingParams


class HFEngine:
    def __init__(self, model, tokenizer, device: str | None = None, max_batch_size: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device or next(model.parameters()).device
        self.max_batch_size = max_batch_size
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = {eos} | (set(gen_eos) if isinstance(gen_eos, list) else {gen_eos})
        self.eos_ids = sorted(i for i in ids if i is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def load_weights(self, model_or_state_dict) -> None:
        """Take new policy weights: a model (shared from now on) or a state dict (copied in)."""
        if isinstance(model_or_state_dict, torch.nn.Module):
            self.model = model_or_state_dict
        elif model_or_state_dict is not None:
            self.model.load_state_dict(model_or_state_dict)

    def close(self) -> None:
        self.model = None

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed)
        out: list[Completion] = []
        for start in range(0, len(prompts), self.max_batch_size):
            out.extend(self._generate_batch(prompts[start:start + self.max_batch_size], params, gen))
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts, params: SamplingParams, gen) -> list[Completion]:
        model, dev = self.model, self.device
        was_training = model.training
        model.eval()
        B, L = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding keeps every sequence's end aligned
            input_ids[i, L - len(p):] = torch.tensor(p)
            attn[i, L - len(p):] = 1
        input_ids, attn = input_ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        stopper = _StopMatcher(self.tokenizer, params.stop)
        tokens: list[list[int]] = [[] for _ in range(B)]
        logps: list[list[float]] = [[] for _ in range(B)]
        reason: list[str | None] = [None] * B
        stop_str: list[str | None] = [None] * B
        eos = torch.tensor(self.eos_ids, device=dev)
        past, cur = None, input_ids
        try:
            for _ in range(params.max_new_tokens):
                o = model(input_ids=cur, attention_mask=attn, position_ids=pos,
                          past_key_values=past, use_cache=True)
                past = o.past_key_values
                logits = o.logits[:, -1, :].float()  # (B, V)
                nxt, lp = _sample(logits, params.temperature, params.top_p, gen)
                is_eos = torch.isin(nxt, eos).tolist()
                nxt_l, lp_l = nxt.tolist(), lp.tolist()
                for i in range(B):
                    if reason[i] is not None:
                        continue
                    tokens[i].append(nxt_l[i])
                    logps[i].append(lp_l[i])
                    if is_eos[i]:
                        reason[i] = "eos"
                    elif stopper.active and (s := stopper.match(tokens[i])) is not None:
                        reason[i], stop_str[i] = "stop", s
                if all(r is not None for r in reason):
                    break
                cur = nxt.unsqueeze(1)
                attn = torch.cat([attn, attn.new_ones((B, 1))], dim=1)
                pos = pos[:, -1:] + 1
        finally:
            model.train(was_training)
        return [Completion(tokens[i], logps[i], reason[i] or "length", stop_str[i]) for i in range(B)]


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return ids (B,) and log_softmax(logits / T) of them (B,)."""
    if temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)
        nxt = logits.argmax(dim=-1)
        return nxt, logp.gather(1, nxt[:, None]).squeeze(1)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (B, V)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest prefix with mass >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(1, idx, sorted_p)
    nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return nxt, logp.gather(1, nxt[:, None]).squeeze(1)


class _StopMatcher:
    """Finds a stop string in the decoded tail of a token list (it may span several tokens)."""

    def __init__(self, tokenizer, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.active = bool(self.stops)
        # Every token decodes to at least one character, so this many tokens cover any stop string.
        self.window = max((len(s) for s in self.stops), default=0) + 1

    def match(self, ids: list[int]) -> str | None:
        tail = self.tokenizer.decode(ids[-self.window:], skip_special_tokens=False)
        for s in self.stops:
            if s in tail:
                return s
        return None
