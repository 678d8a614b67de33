"""HFEngine: the reference Engine on transformers, for CPU and one GPU.

Batched incremental decoding with a KV cache over left-padded prompts. Each step samples from
``softmax(logits / temperature)`` restricted to the top-p nucleus and records
``log_softmax(logits / temperature)`` of the sampled token — the value the learner recomputes from
the final sequence (top-p only narrows where samples come from). Greedy when temperature is 0.
Stop strings are matched on the decoded tail of each sequence, so a string that spans several
tokens stops generation right after the token that completes it; the stop string stays in the
output. On CPU the engine shares the training model object, so no weight sync is needed.

What makes it fast without changing a single sampled token:

- the whole batch generates at once (``max_batch_size`` only bounds memory);
- sampling is inverse-CDF with one seeded uniform per row and step (an fp64 cumulative sum and a
  binary search, the distribution ``torch.multinomial`` draws from at a fraction of its cost); the
  uniforms are drawn for the whole call up front, so a row's draws do not depend on how the batch
  is chunked, deduplicated or resumed from a cache;
- the prefill keeps logits of the last position only (``logits_to_keep``, as HF ``generate``);
- decode steps of Llama-family models run the model's modules directly on key/value buffers
  written in place (:mod:`rlvr.engines.fast_decode`), not through ``model(...)`` and its
  per-call mask building and cache concatenation (``fast_decode=False`` turns it off);
- once half the rows being fed have finished, the finished ones leave the batch (their keys and
  values are kept for the next turn);
- the text tail is decoded only after a token that can complete a stop string;
- identical prompts (the G samples of a group) are prefilled once and their cache rows shared;
- :meth:`HFEngine.run` (continuous turns, where the decode step below applies): every episode in
  one call, a row whose turn ends is handed to the caller's ``on_turn`` (the environment steps)
  and samples its next turn at once, its observation fed in the same forward pass as the batch's
  next decode step; rows write their own cache slots, so no turn waits for the slowest row;
- :meth:`HFEngine.session` keeps each episode's KV cache between turns, so an observation costs
  a prefill of its own tokens only (the multi-turn rollout no longer re-prefills everything);
  with the decode step above, those tokens are fed by it too, on the kept keys and values
  gathered straight into its buffers.

The cache is passed as ``cache=`` where the model takes it (transformers >= 5) and as
``past_key_values=`` on older releases, which have no other name for it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Hashable

import torch

from rlvr.engines import continuous
from rlvr.engines.base import Completion, SamplingParams
from rlvr.engines.fast_decode import BLOCK, FastDecoder
from rlvr.engines.kv_cache import KVStore, gather_kv, gather_rows, new_cache, store_of


class HFEngine:
    def __init__(self, model, tokenizer, device: str | None = None,
                 max_batch_size: int | None = None, fast_decode: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device or next(model.parameters()).device
        # None / 0: the whole batch at once; otherwise at most this many rows per forward pass
        self.max_batch_size = max_batch_size or None
        # decode steps through FastDecoder where the model type allows (False: always model(...))
        self.fast_decode = fast_decode
        self._decoder_of: tuple[object, bool] | None = None
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = {eos} | (set(gen_eos) if isinstance(gen_eos, list) else {gen_eos})
        self.eos_ids = sorted(i for i in ids if i is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._stop_tables: dict[tuple[tuple[str, ...], int], torch.Tensor] = {}
        self._kwargs_of: tuple[object, tuple[str, str | None]] | None = None

    def load_weights(self, model_or_state_dict) -> None:
        """Take new policy weights: a model (shared from now on) or a state dict (copied in)."""
        if isinstance(model_or_state_dict, torch.nn.Module):
            self.model = model_or_state_dict
        elif model_or_state_dict is not None:
            self.model.load_state_dict(model_or_state_dict)

    def close(self) -> None:
        self.model = None

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        return self._generate(prompts, params, [None] * len(prompts))[0]

    def session(self) -> "HFSession":
        """A multi-turn session: rows keep their KV cache from one call to the next."""
        return HFSession(self)

    # -- one call -----------------------------------------------------------------------------

    def _generate(self, prompts, params: SamplingParams, cached: list["_Row | None"]
                  ) -> tuple[list[Completion], list["_Row | None"]]:
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
        B, N = len(prompts), params.max_new_tokens
        uniforms = None
        if params.temperature > 0:  # row i's draw at step t is uniforms[i, t], whatever the chunking
            gen = (torch.Generator(device=self.device).manual_seed(params.seed)
                   if params.seed is not None else None)
            uniforms = torch.rand((B, N), generator=gen, dtype=torch.float64, device=self.device)
        size = self.max_batch_size or max(B, 1)
        outs: list[Completion] = []
        rows: list[_Row | None] = []
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for s in range(0, B, size):
                    part = cached[s:s + size]
                    cached[s:s + size] = [None] * len(part)  # the chunk frees what it gathered
                    o, r = self._generate_chunk(prompts[s:s + size], params, part,
                                                None if uniforms is None else uniforms[s:s + size])
                    outs.extend(o)
                    rows.extend(r)
        finally:
            model.train(was_training)
        return outs, rows

    def _generate_chunk(self, prompts, params, cached, uniforms):
        b, N = len(prompts), params.max_new_tokens
        dec, attn, pos, logits = self._prefill(prompts, cached, N - 1)
        cached.clear()  # last turn's cache rows are copied: free them before decoding grows this one
        dev = logits.device
        toks = torch.empty((b, N), dtype=torch.long, device=dev)
        lps = torch.empty((b, N), dtype=torch.float32, device=dev)
        n_gen = [N] * b
        reason: list[str | None] = [None] * b
        stop_str: list[str | None] = [None] * b
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        eos = torch.tensor(self.eos_ids, device=dev)
        matcher = _StopMatcher(self.tokenizer, params.stop)
        table = self._stop_table(matcher.stops, logits.shape[-1], dev) if matcher.active else None
        prefill_len = width = attn.shape[1]
        attn = torch.cat([attn, attn.new_ones((b, N))], dim=1)  # every step's slot; ``width`` fed
        # None: not a plain cache (model(...) on its own), whose rows cannot be dropped
        droppable = isinstance(dec, FastDecoder) or dec.store() is not None
        act, act_l = torch.arange(b, device=dev), list(range(b))  # the rows still being fed
        parts: list[tuple] = []  # (keys and values, attention mask, rows) of each group of rows
        live = b
        for t in range(N):
            every = len(act_l) == b  # no row has left the batch: plain columns, no gathers
            u = None if uniforms is None else (uniforms[:, t] if every else uniforms[act, t])
            nxt, lp = _sample(logits, params.temperature, params.top_p, u)
            if every:
                toks[:, t], lps[:, t] = nxt, lp
            else:
                toks[act, t], lps[act, t] = nxt, lp
            ended = done if every else done[act]  # read before this step marks any row done
            hit_eos = torch.isin(nxt, eos) & ~ended
            flags = hit_eos[None] if table is None else torch.stack([hit_eos, table[nxt] & ~ended & ~hit_eos])
            flags = flags.cpu()  # the one host sync per step
            finished = [act_l[j] for j in flags[0].nonzero().flatten().tolist()]
            for i in finished:
                reason[i], n_gen[i] = "eos", t + 1
            if table is not None and bool(flags[1].any()):
                check = [act_l[j] for j in flags[1].nonzero().flatten().tolist()]
                lo = max(0, t + 1 - matcher.window)
                tails = toks[check, lo:t + 1].tolist()
                for i, tail in zip(check, tails):
                    if (s := matcher.match(tail)) is not None:
                        reason[i], stop_str[i], n_gen[i] = "stop", s, t + 1
                        finished.append(i)
            if finished:
                done[finished] = True
                live -= len(finished)
            if live == 0 or t == N - 1:
                break
            if droppable and live <= len(act_l) // 2:  # stop feeding the finished half
                ended = done[act]
                gone, keep = ended.nonzero().flatten(), (~ended).nonzero().flatten()
                parts.append((dec.take(gone), attn[gone, :width], [act_l[j] for j in gone.tolist()]))
                dec.select(keep)
                act, attn, pos, nxt = act[keep], attn[keep], pos[keep], nxt[keep]
                act_l = act.tolist()
            width += 1
            logits = dec.step(nxt, attn[:, :width], pos)
            pos = pos + 1
        toks_l, lps_l = toks.tolist(), lps.tolist()
        outs = [Completion(toks_l[i][:n_gen[i]], lps_l[i][:n_gen[i]], reason[i] or "length", stop_str[i])
                for i in range(b)]
        parts.append((dec.store(), attn[:, :width], act_l))
        return outs, self._rows_after(parts, prefill_len, prompts, outs)

    # -- continuous turns ---------------------------------------------------------------------

    def continuous(self) -> bool:
        """Whether :meth:`run` applies: the model decodes through :class:`FastDecoder`."""
        return self._fast_decoder() is not None

    def run(self, prompts: list[list[int]], params: SamplingParams, caps: list[int],
            on_turn: Callable[[list[tuple[int, Completion]]], list[tuple[list[int], int] | None]]
            ) -> None:
        """Whole episodes, each row starting its next turn as soon as its own ends: row ``i``
        samples up to ``caps[i]`` tokens, then ``on_turn([(i, completion), ...])`` answers None
        (the episode is over) or ``(observation ids, next cap)``; see :mod:`rlvr.engines.continuous`."""
        continuous.run(self, prompts, params, caps, on_turn)

    def _fast_decoder(self, reach: int = 0) -> FastDecoder | None:
        """A :class:`FastDecoder` of the model as it is now, its rotary table covering positions
        below ``reach``, or None where it does not apply (or is turned off). Built per call, so a
        layer replaced since (an adapter injected in place) is the one it runs; whether the model
        type applies is worked out once per model."""
        if self._decoder_of is None or self._decoder_of[0] is not self.model:
            self._decoder_of = (self.model, self.fast_decode and FastDecoder.supports(self.model))
        if not self._decoder_of[1]:
            return None
        dec = FastDecoder(self.model)
        if reach:
            dec.positions(reach)
        return dec

    # -- prefill ------------------------------------------------------------------------------

    def _prefill(self, prompts, cached, extra: int):
        """The decoder each row continues from (a :class:`FastDecoder` with room for ``extra``
        more slots where it applies, else :class:`_ModelCall`), the attention mask (b, L), the
        next position (b,) and the next-token logits (b, V) of each prompt: prefilled from
        scratch (identical prompts once), or from a cached prefix plus the new tokens only."""
        dev = self.device
        keep = [_reusable(c, p) for c, p in zip(cached, prompts)]
        next_pos = torch.tensor([len(p) for p in prompts], device=dev)
        reach = max(len(p) for p in prompts) + extra  # every position this call feeds is below it
        if not any(keep):
            uniq: dict[tuple[int, ...], int] = {}
            which = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]
            ids, attn = _left_pad(list(uniq), self.pad_id, dev)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            cache = new_cache(self.model)
            logits = self._forward(ids, attn, pos, cache)
            if len(uniq) < len(prompts):  # the G samples of a group share one prefill
                idx = torch.tensor(which, device=dev)
                cache.batch_select_indices(idx)
                attn, logits = attn[idx], logits[idx]
            return self._decoder(cache, extra, reach), attn, next_pos, logits
        stores = [c.store if c else None for c in cached]
        index = [c.index if c else 0 for c in cached]
        ids, new = _left_pad([p[k:] for p, k in zip(prompts, keep)], self.pad_id, dev)
        pos = torch.tensor(keep, device=dev)[:, None] + (new.cumsum(-1) - 1).clamp(min=0)
        if (dec := self._fast_decoder(reach)) is not None:  # gathered straight into its buffers
            layers, past = gather_kv(stores, index, keep, dev, room=new.shape[1] + min(extra, BLOCK))
            dec.adopt(layers, past.shape[1])
            attn = torch.cat([past.long(), new], dim=1)
            return dec, attn, next_pos, dec.extend(ids, attn, pos)
        cache, past = gather_rows(self.model, stores, index, keep, dev)
        attn = torch.cat([past.long(), new], dim=1)
        logits = self._forward(ids, attn, pos, cache)
        return _ModelCall(self, cache), attn, next_pos, logits

    def _decoder(self, cache, extra: int, reach: int) -> "FastDecoder | _ModelCall":
        """The decoder that continues from a prefilled ``cache`` for ``extra`` more tokens, at
        positions below ``reach``: a :class:`FastDecoder` holding its keys and values where it
        applies (a plain cache), else ``model(...)`` on it."""
        store = store_of(cache)  # None: a cache that is not a plain record of every token
        dec = self._fast_decoder(reach) if store is not None else None
        if dec is None:
            return _ModelCall(self, cache)
        dec.start(store, extra)  # the decoder's buffers hold it all from now on
        return dec

    def _forward(self, ids, attn, pos, cache) -> torch.Tensor:
        cache_kw, keep_kw = self._kwargs()
        kw = {cache_kw: cache, "use_cache": True}
        if keep_kw:
            kw[keep_kw] = 1
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, **kw)
        return out.logits[:, -1, :].float()  # (b, V)

    def _kwargs(self) -> tuple[str, str | None]:
        """The model's name for the cache argument and for 'logits of the last k positions'."""
        if self._kwargs_of is None or self._kwargs_of[0] is not self.model:
            self._kwargs_of = (self.model, forward_kwargs(self.model))
        return self._kwargs_of[1]

    def _rows_after(self, parts, prefill_len, prompts, outs) -> list["_Row | None"]:
        """What each row leaves in the cache: the prompt and every sampled token but the last (it
        was never fed). ``parts``: (per-layer keys and values or None where not kept, attention
        mask, the rows they hold), one for the rows decoded to the end and one per drop of
        finished rows. Slots fed after a row finished hold other tokens and are not its own."""
        rows: list[_Row | None] = [None] * len(prompts)
        for store, attn, which in parts:
            if store is None or not which:
                continue
            valid = attn.bool().clone()
            fed = torch.tensor([len(outs[i].token_ids) - 1 for i in which], device=valid.device)
            step = torch.arange(valid.shape[1] - prefill_len, device=valid.device)
            valid[:, prefill_len:] &= step[None, :] < fed[:, None]
            kv = KVStore(store, valid)
            for j, i in enumerate(which):
                rows[i] = _Row(kv, j, list(prompts[i]) + outs[i].token_ids[:-1])
        return rows

    def _stop_table(self, stops: list[str], vocab: int, dev) -> torch.Tensor:
        """(V,) bool: token ids after which a stop string can newly appear in the decoded text —
        a token whose own text holds a stop string's last character, or that decodes to an
        incomplete byte sequence (the character may form with the next token). A stop string
        ending in whitespace (which decoding may strip or merge) makes every token a candidate."""
        key = (tuple(stops), vocab)
        if key not in self._stop_tables:
            n = min(vocab, len(self.tokenizer))
            table = torch.ones(vocab, dtype=torch.bool)
            lasts = {s[-1] for s in stops}
            if not any(c.isspace() for c in lasts):
                pieces = self.tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
                table[:n] = torch.tensor([not p or "\ufffd" in p or any(c in p for c in lasts)
                                          for p in pieces])
            self._stop_tables[key] = table
        return self._stop_tables[key].to(dev)


class _ModelCall:
    """Decode steps through ``model(...)`` on its own cache, with :class:`FastDecoder`'s
    interface (``take`` and ``select`` only on a plain cache, :func:`store_of` not None)."""

    def __init__(self, engine: HFEngine, cache) -> None:
        self.engine, self.cache = engine, cache

    def step(self, ids, attn, pos) -> torch.Tensor:
        return self.engine._forward(ids[:, None], attn, pos[:, None], self.cache)

    def store(self):
        return store_of(self.cache)

    def take(self, rows: torch.Tensor):
        return [(k[rows], v[rows]) for k, v in store_of(self.cache)]

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)


@dataclass
class _Row:
    """One row's KV cache: row ``index`` of ``store``, holding K/V of ``tokens`` in order."""

    store: KVStore
    index: int
    tokens: list[int]


class HFSession:
    """Multi-turn generation that keeps each episode's KV cache between calls.

    ``generate(keys, prompts, params)``: ``keys`` name the episodes (one per prompt). A key seen
    in the previous call whose prompt extends the tokens its cache holds prefills only the new
    tokens; any mismatch (a sequence cut or rewritten) falls back to the longest common prefix,
    so the result is that of :meth:`HFEngine.generate` on the same prompts. Keys absent from a
    call are forgotten, and their cache freed."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine
        self._rows: dict[Hashable, _Row | None] = {}

    def generate(self, keys: list[Hashable], prompts: list[list[int]], params: SamplingParams
                 ) -> list[Completion]:
        if len(keys) != len(prompts):
            raise ValueError(f"{len(keys)} keys for {len(prompts)} prompts")
        cached = [self._rows.get(k) for k in keys]
        self._rows = {}  # free what the call does not continue before it allocates
        outs, rows = self.engine._generate(prompts, params, cached)
        self._rows = dict(zip(keys, rows))
        return outs

    def continuous(self) -> bool:
        """Whether :meth:`run` applies (see :meth:`HFEngine.run`)."""
        return self.engine.continuous()

    def run(self, prompts, params, caps, on_turn) -> None:
        """Whole episodes with continuous turns: :meth:`HFEngine.run`."""
        self._rows = {}
        self.engine.run(prompts, params, caps, on_turn)

    def close(self) -> None:
        self._rows = {}


def forward_kwargs(model) -> tuple[str, str | None]:
    """(cache argument, logits-to-keep argument or None) of ``model.forward``: ``cache`` in
    transformers >= 5 (``past_key_values`` there is deprecated), ``past_key_values`` before;
    ``logits_to_keep`` (``num_logits_to_keep`` in 4.45-4.49). A wrapper whose forward only takes
    ``**kwargs`` (PEFT) is looked through to its base model."""
    m = model
    for _ in range(4):
        params = inspect.signature(m.forward).parameters
        if "cache" in params or "past_key_values" in params or not hasattr(m, "get_base_model"):
            break
        m = m.get_base_model()
    cache_kw = "cache" if "cache" in params else "past_key_values"
    keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return cache_kw, keep_kw


def _reusable(row: _Row | None, prompt: list[int]) -> int:
    """How many leading tokens of ``prompt`` the row's cache holds (at most ``len(prompt) - 1``:
    the last token is fed to get the next-token logits)."""
    if row is None:
        return 0
    cached, n = row.tokens, min(len(row.tokens), len(prompt) - 1)
    if prompt[:n] == cached[:n]:
        return n
    k = 0
    while k < n and prompt[k] == cached[k]:
        k += 1
    return k


def _left_pad(seqs: list, pad_id: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) ids and attention mask, left padded so every sequence ends at the last column."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, L - len(s):] = torch.tensor(s)
            attn[i, L - len(s):] = 1
    return ids.to(dev), attn.to(dev)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return ids (B,) and log_softmax(logits / T) of them (B,).

    Inverse CDF (:func:`_inverse_cdf`) with one uniform ``u`` per row, the distribution
    ``torch.multinomial`` draws from without its random number per vocabulary entry; the
    softmax is never normalised over the vocabulary (``exp(z - max)`` and its fp64 sum give
    both the draw and ``logsumexp``). ``u`` None: drawn from the global generator."""
    if temperature == 0:
        nxt = logits.argmax(dim=-1)
        return nxt, logits.gather(1, nxt[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
    z = logits / temperature if temperature != 1.0 else logits  # (B, V)
    m = z.amax(dim=-1, keepdim=True)  # (B, 1); amax: no indices computed
    w = (z - m).exp()  # (B, V) unnormalised probabilities, max 1
    if u is None:
        u = torch.rand(w.shape[0], dtype=torch.float64, device=w.device)
    if top_p < 1.0:
        total = w.sum(-1, keepdim=True, dtype=torch.float64)
        sp, idx = (w / total.float()).sort(dim=-1, descending=True)
        drop = sp.cumsum(-1) - sp > top_p  # keep the smallest prefix with mass >= top_p
        nxt = idx.gather(1, _inverse_cdf(sp.masked_fill(drop, 0.0), u)[0][:, None]).squeeze(1)
    else:
        nxt, total = _inverse_cdf(w, u)
    lse = m.squeeze(1) + total.squeeze(1).log().float()  # logsumexp(z)
    return nxt, z.gather(1, nxt[:, None]).squeeze(1) - lse


def _inverse_cdf(w: torch.Tensor, u: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``j`` per row with ``cdf[j-1] <= u * cdf[-1] < cdf[j]`` over weights ``w`` (B, V) —
    probability exactly ``w_j / sum(w)`` — and ``sum(w)`` (B, 1), both sums in fp64.

    Two levels, so no (B, V) fp64 tensor is built: fp64 sums of blocks of ``block`` entries, a
    binary search for the block holding ``u * total``, then a cumulative sum inside that block.
    A vocabulary of one block or less is that block: one cumulative sum, the same draw."""
    B, V = w.shape
    if V <= block:  # the two-level path below with a single block, without its padding to block
        cb = w.double().cumsum(-1)  # (B, V)
        total = cb[:, -1:]  # (B, 1)
        return _search(cb, u[:, None] * total).squeeze(1), total
    nf = V // block
    sums = w[:, :nf * block].view(B, nf, block).sum(-1, dtype=torch.float64)  # (B, nf)
    if V > nf * block:
        sums = torch.cat([sums, w[:, nf * block:].sum(-1, keepdim=True, dtype=torch.float64)], 1)
    cum = sums.cumsum(-1)  # (B, nb)
    total = cum[:, -1:]
    x = u[:, None] * total  # (B, 1)
    blk = _search(cum, x)  # the block whose cdf first passes x (never one past the last mass)
    start = blk * block  # (B, 1)
    col = start + torch.arange(block, device=w.device)  # (B, block)
    inside = col < V
    wb = w.gather(1, col.clamp(max=V - 1)).double() * inside
    cb = (cum.gather(1, blk) - sums.gather(1, blk)) + wb.cumsum(-1)  # cdf within the block
    return (start + _search(cb, x)).squeeze(1), total


def _search(cdf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, 1) index of the first entry of each row's nondecreasing ``cdf`` (B, n) above ``x``
    (B, 1). An ``x`` at or past the row's last value (``u * total`` rounding up, or a block's
    own sum falling short of its share of the total) is taken as the float just below it, so
    the index is that of the last entry with mass: never a token of probability 0."""
    last = cdf[:, -1:]
    return torch.searchsorted(cdf, torch.minimum(x, torch.nextafter(last, torch.zeros_like(last))), right=True)


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
