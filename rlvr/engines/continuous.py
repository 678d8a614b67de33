"""Continuous turns of the HF engine (:meth:`rlvr.engines.hf.HFEngine.run`): every episode in one
call, each row writing its own cache slots and starting its next turn as soon as its own ends.

At every step, the rows whose turn ended there go to ``on_turn`` as ``(i, completion of the
turn)``; for each it answers None (the row leaves the batch) or ``(observation ids, next turn's
cap)``: the row's last sampled token and the observation are fed (in the same pass as the
others' decode step) and it samples again. No row waits for another's turn to end. Row ``i``'s
``t``-th sampled token of the episode takes uniform ``t`` of row ``i`` of a generator seeded
with ``params.seed``, so the episodes do not depend on the batch's chunking."""

from __future__ import annotations

import itertools

import torch

from rlvr.engines.base import Completion
from rlvr.engines.fast_decode import BLOCK, FastDecoder
from rlvr.engines import hf  # (imported by hf itself: its names are read at call time)


def run(self, prompts, params, caps, on_turn) -> None:
    """``HFEngine.run`` (see there), on engine ``self``."""
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} has no tokens")
    if len(caps) != len(prompts) or min(caps, default=1) < 1:
        raise ValueError(f"caps must give each of the {len(prompts)} prompts at least 1 token, got {caps}")
    if not self.continuous():
        raise RuntimeError("continuous turns need the fast decode step (fast_decode=True and a "
                           "Llama-family model); use a session's generate() per turn")
    draws = None
    if params.temperature > 0:
        gen = (torch.Generator(device=self.device).manual_seed(params.seed)
               if params.seed is not None else None)
        draws = _Draws(len(prompts), gen, self.device)
    size = self.max_batch_size or max(len(prompts), 1)
    model = self.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(prompts), size):
                part = list(range(s, min(s + size, len(prompts))))
                _run_chunk(self, part, [prompts[i] for i in part], params, [caps[i] for i in part],
                           on_turn, draws)
    finally:
        model.train(was_training)


def _run_chunk(self, index, prompts, params, caps, on_turn, draws) -> None:
    b = len(prompts)
    dec, attn, pos, logits = self._prefill(prompts, [None] * b, max(caps) - 1)
    if not isinstance(dec, FastDecoder):  # a cache the fast step cannot hold (checked before)
        raise RuntimeError("continuous turns: the prefill's cache is not a plain one")
    dev = logits.device
    top = attn.shape[1]  # every row's next slot is below top + 1
    valid = torch.zeros((b, top + BLOCK), dtype=torch.bool, device=dev)
    valid[:, :top] = attn.bool()
    slot = torch.full((b,), top, dtype=torch.long, device=dev)  # each row's next slot
    pmax = int(pos.max())  # the highest position fed next
    reach = pmax + BLOCK  # the rotary table covers positions below it
    dec.positions(reach)
    toks = torch.empty((b, BLOCK), dtype=torch.long, device=dev)  # column t: step t's token
    lps = torch.empty((b, BLOCK), dtype=torch.float32, device=dev)
    start = [0] * b  # the step each row's current turn began at
    last = torch.tensor([c - 1 for c in caps], device=dev)  # the step its turn must end at
    over = torch.zeros(b, dtype=torch.bool, device=dev)  # the rows whose episode is over
    eos = torch.tensor(self.eos_ids, device=dev)
    matcher = hf._StopMatcher(self.tokenizer, params.stop)
    table = self._stop_table(matcher.stops, logits.shape[-1], dev) if matcher.active else None
    act, act_l = torch.arange(b, device=dev), list(range(b))  # the rows still fed
    gi = torch.tensor(index, device=dev)  # their rows in the whole call (the draws')
    live = b
    for t in itertools.count():
        if t == toks.shape[1]:
            toks = torch.cat([toks, toks.new_empty((b, BLOCK))], 1)
            lps = torch.cat([lps, lps.new_empty((b, BLOCK))], 1)
        u = None if draws is None else draws.at(gi, t)
        nxt, lp = hf._sample(logits, params.temperature, params.top_p, u)
        toks[act, t], lps[act, t] = nxt, lp
        gone = over[act]
        hit_eos = torch.isin(nxt, eos) & ~gone
        at_cap = (last[act] == t) & ~gone & ~hit_eos
        rows = [hit_eos, at_cap] if table is None else [hit_eos, at_cap, table[nxt] & ~gone & ~hit_eos]
        flags = torch.stack(rows).cpu()  # the one host sync per step
        ended: dict[int, tuple[str, str | None]] = {
            act_l[j]: ("eos", None) for j in flags[0].nonzero().flatten().tolist()}
        if table is not None and bool(flags[2].any()):
            check = [act_l[j] for j in flags[2].nonzero().flatten().tolist()]
            for i in check:
                tail = toks[i, max(start[i], t + 1 - matcher.window):t + 1].tolist()
                if (m := matcher.match(tail)) is not None:
                    ended[i] = ("stop", m)
        for j in flags[1].nonzero().flatten().tolist():
            ended.setdefault(act_l[j], ("length", None))
        feed: list[tuple[int, list[int]]] = []  # rows going on, with their observations
        if ended:
            order = sorted(ended)
            outs = []
            for i in order:
                reason, stop = ended[i]
                outs.append((index[i], Completion(toks[i, start[i]:t + 1].tolist(),
                                                  lps[i, start[i]:t + 1].tolist(), reason, stop)))
            answers = on_turn(outs)
            if len(answers) != len(outs):
                raise RuntimeError(f"on_turn answered {len(answers)} of {len(outs)} turns")
            for i, ans in zip(order, answers):
                if ans is None:
                    over[i] = True
                    live -= 1
                    continue
                obs, cap = ans
                if cap < 1:
                    raise ValueError(f"on_turn gave row {index[i]} a cap of {cap} tokens")
                start[i], last[i] = t + 1, t + cap
                if obs:
                    feed.append((i, list(obs)))
        if live == 0:
            break
        if live <= len(act_l) // 2:  # stop feeding the rows whose episodes are over
            keep = (~over[act]).nonzero().flatten()
            dec.select(keep)
            act, valid, slot, pos, nxt, gi = act[keep], valid[keep], slot[keep], pos[keep], nxt[keep], gi[keep]
            act_l = act.tolist()
        if top + 1 > valid.shape[1]:
            valid = torch.cat([valid, valid.new_zeros((valid.shape[0], BLOCK))], 1)
        here = torch.arange(len(act_l), device=dev)
        valid[here, slot] = True
        more, end = None, top + 1
        if feed:  # their last sampled token (this step's) and their observations after it
            where = {i: j for j, i in enumerate(act_l)}
            sel = torch.tensor([where[i] for i, _ in feed], device=dev)
            ids, new = hf._left_pad([o for _, o in feed], self.pad_id, dev)
            n = ids.shape[1]
            base = slot[sel] + 1
            end = max(end, int(base.max()) + n)
            if end > valid.shape[1]:
                valid = torch.cat([valid, valid.new_zeros((len(act_l), end - valid.shape[1] + BLOCK))], 1)
            seen = valid[sel, :end]  # a copy: this step's token must not see the observation
            seen[torch.arange(len(feed), device=dev)[:, None], base[:, None] + torch.arange(n, device=dev)] = new.bool()
            opos = pos[sel][:, None] + 1 + (new.cumsum(-1) - 1).clamp(min=0)
            pmax = max(pmax, int(opos.max()))
            more = (sel, ids, seen, opos, base)
        if pmax + 1 > reach:
            reach = pmax + 1 + BLOCK
            dec.positions(reach)
        logits, after = dec.step_at(nxt, valid[:, :end], pos, slot, end, more)
        slot, pos = slot + 1, pos + 1
        top, pmax = end, pmax + 1
        if feed:
            logits[sel] = after
            valid[sel, :end] = seen
            slot[sel] = base + n
            pos[sel] = opos[:, -1] + 1


class _Draws:
    """The uniforms of a call's rows: column ``t`` is every row's draw for its ``t``-th sampled
    token, made in blocks of columns as the episodes grow (the same numbers however far they go)."""

    def __init__(self, rows: int, gen: torch.Generator | None, dev) -> None:
        self.rows, self.gen, self.dev = rows, gen, dev
        self.u = torch.empty((rows, 0), dtype=torch.float64, device=dev)

    def at(self, rows: torch.Tensor, t: int) -> torch.Tensor:
        while t >= self.u.shape[1]:
            more = torch.rand((self.rows, BLOCK), generator=self.gen, dtype=torch.float64, device=self.dev)
            self.u = torch.cat([self.u, more], 1)
        return self.u[rows, t]
