"""The HF engine's decode step for Llama-family models, without transformers' per-call machinery.

A decode step feeds one token per row. Through ``model(...)`` it also builds a 4-D mask, resolves
the attention function, runs the output-recording decorators and appends every layer's new key
and value to the cache with a ``torch.cat`` (a copy of the whole cache, per layer, per token). On a
small model those cost more than the matrix products. :class:`FastDecoder` runs the same modules
(the embedding, each layer's norms, projections and MLP, the rotary embedding, the head) in the
same order, with the attention call transformers' ``sdpa`` implementation makes for one query, on
key/value buffers grown in blocks and written in place. The logits equal the model's up to float
rounding (the test compares the two paths).

Per step, the rotary cos/sin come from a table the model's own rotary embedding filled once per
call (:meth:`FastDecoder.positions`; not for dynamic or long-rope scaling, whose frequencies
depend on how far a call reaches), transformers' RMSNorm and gated MLP run as functions (a copy
of Llama's code, unhooked, is recognised as such; anything else is called as a module), the
attention mask is made additive once rather than in every layer, and on the CPU in fp32 the
one-query attention is three batched products (the flash kernel's per-row, per-head overhead dominated
there). The logits equal the plain path's to float rounding (the fp32 rotary table, norm and
mask are bit for bit the module's; the batched products round differently from the kernel).

A later turn's new tokens (the observation, after the last sampled token) go in through
:meth:`FastDecoder.extend`: the kept rows are gathered straight into its buffers and the new
tokens run causally over them with the attention call transformers makes for several queries,
so the turn costs one copy of the kept keys and values, not three. With continuous turns
(:meth:`FastDecoder.step_at`) each row writes its own slots, and the rows whose turn just ended
take their observation in the same pass as the others' decode step: the projections and the
MLP run over all the pass's tokens at once, the attention part by part. Buffers are zeroed, so a
slot no row has written (a masked one) holds no NaN that the masked sum would carry.

It applies to the model types whose layers are exactly Llama's (``llama``, ``qwen2``, ``mistral``,
and ``qwen3`` with its per-head q/k norms), full attention on every layer, the ``sdpa`` or
``eager`` attention implementation; anything else (sliding windows, other architectures, FSDP)
decodes through ``model(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr.core.models import full_attention, plain_head, unhooked

BLOCK = 64  # key/value slots added at a time when a row's buffer is full


@dataclass
class _Part:
    """Tokens fed in one pass: ``ids`` (b, n) at positions ``pos`` (b, n), attending to the
    slots ``own`` (b, end) marks, causally among themselves; their keys go to slots ``where``
    (an int: the same slots of every row; else (b, n), in buffer rows ``into`` (b,)), and they
    read buffer rows ``rows`` (None: every row, in order)."""

    ids: torch.Tensor
    own: torch.Tensor
    pos: torch.Tensor
    where: "int | torch.Tensor"
    into: torch.Tensor | None = None
    rows: torch.Tensor | None = None


def _linear(module):
    """``module`` as a function: a plain ``nn.Linear`` without hooks through ``F.linear`` (no
    module call) on the weights it holds when called, anything else (a LoRA layer, a hooked
    projection) called as it is."""
    if type(module) is torch.nn.Linear and unhooked(module):
        return lambda x: F.linear(x, module.weight, module.bias)
    return module


def _rms_norm(module):
    """``module`` as a function: transformers' own RMSNorm (Llama's, or a copy of it: Qwen2's,
    Qwen3's, Mistral's) without hooks through ``F.rms_norm``, one call where the module makes
    seven (the same fp32 result bit for bit; other dtypes, and any other norm, call the module)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    if module is None or not (_same_code(type(module).forward, LlamaRMSNorm.forward) and unhooked(module)):
        return module
    if not _rms_norm_matches(module):
        return module

    def norm(x):
        w = module.weight
        if x.dtype != torch.float32 or w.dtype != torch.float32:
            return module(x)
        return F.rms_norm(x, (x.shape[-1],), w, module.variance_epsilon)

    return norm


_RMS_NORM_MATCHES: dict[type, bool] = {}


def _rms_norm_matches(module) -> bool:
    """Whether ``F.rms_norm`` gives the module's own fp32 output bit for bit, checked once per
    class on a random input (a transformers or torch release that changes either formula makes
    the module be called, not a function that differs from it). A module whose weight is not
    fp32 always runs as a module, so it needs no check."""
    w = module.weight
    if w.dtype != torch.float32:
        return True
    cls = type(module)
    if cls not in _RMS_NORM_MATCHES:
        with torch.no_grad():
            x = torch.randn((2, 3, w.shape[-1]), generator=torch.Generator().manual_seed(0)).to(w.device)
            ref, got = module(x), F.rms_norm(x, (x.shape[-1],), w, module.variance_epsilon)
        _RMS_NORM_MATCHES[cls] = ref.dtype == got.dtype and torch.equal(ref, got)
    return _RMS_NORM_MATCHES[cls]


def _mlp(module):
    """``module`` as a function: transformers' own gated MLP (Llama's, or a copy of it) without
    hooks, its projections plain ``nn.Linear`` ones, through ``F.linear`` (four module calls
    fewer per layer and token); any other MLP (a LoRA-wrapped projection) is called as it is."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    if not (_same_code(type(module).forward, LlamaMLP.forward) and unhooked(module)):
        return module
    projs = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if any(type(p) is not torch.nn.Linear or not unhooked(p) for p in projs):
        return module
    gate, up, down = (_linear(p) for p in projs)
    act = module.act_fn
    return lambda x: down(act(gate(x)) * up(x))


def _same_code(f, ref) -> bool:
    """Whether function ``f`` is ``ref`` or a verbatim copy of it (transformers copies Llama's
    modules into Qwen2's, Qwen3's and Mistral's files)."""
    a, b = getattr(f, "__code__", None), ref.__code__
    return a is not None and (a.co_code, a.co_names, a.co_consts) == (b.co_code, b.co_names, b.co_consts)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _static_rope(rotary) -> bool:
    """Whether the rotary embedding's frequencies depend on the positions alone (not on how far
    a call reaches, as a dynamic or long-rope scaling's do), so cos/sin can be tabled once."""
    rope_type = getattr(rotary, "rope_type", "default")
    return (isinstance(rope_type, str) and "dynamic" not in rope_type and rope_type != "longrope"
            and unhooked(rotary))


class FastDecoder:
    """Decode steps over a prefilled cache; see the module docstring.

    ``start(store, extra)`` takes the prefill's per-layer (keys, values), each (b, H_kv, L, D),
    or ``adopt(buffers, length)`` buffers already gathered with room to spare;
    ``step(ids, attn, pos)`` feeds ``ids`` (b,) at positions ``pos`` (b,) with the (b, L + t + 1)
    attention mask of every slot so far, and returns the next-token logits (b, V) in fp32;
    ``extend(ids, attn, pos)`` feeds several tokens per row at once;
    ``store()`` gives the per-layer (keys, values) of every fed slot, for the engine's kept caches;
    ``take(rows)`` and ``select(rows)`` let the engine drop finished rows from the batch.
    """

    def __init__(self, model) -> None:
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        cfg = model.config
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.groups = cfg.num_attention_heads // cfg.num_key_value_heads
        self.layers = []
        for layer in self.decoder.layers:
            a = layer.self_attn
            self.layers.append((_rms_norm(layer.input_layernorm), _linear(a.q_proj), _linear(a.k_proj),
                                _linear(a.v_proj), _rms_norm(getattr(a, "q_norm", None)),
                                _rms_norm(getattr(a, "k_norm", None)), _linear(a.o_proj),
                                _rms_norm(layer.post_attention_layernorm), _mlp(layer.mlp), a.scaling))
        self.norm = _rms_norm(self.decoder.norm)
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.length = 0
        # (cos, sin signed for the half rotation) of every position below their length
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def supports(model) -> bool:
        """Whether the model's layers are Llama's with full attention everywhere (and its head a
        plain one: :func:`rlvr.core.models.plain_head`)."""
        parts = plain_head(model)
        if parts is None:
            return False
        cfg = model.config
        if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager", None):
            return False
        if not full_attention(cfg):
            return False
        return all(hasattr(layer, "self_attn") and hasattr(layer, "mlp")
                   for layer in getattr(parts[0], "layers", [None]))

    def start(self, store: list[tuple[torch.Tensor, torch.Tensor]], extra: int) -> None:
        """Copy the prefill's keys and values into buffers with room for ``extra`` more slots
        (they grow in blocks past that)."""
        self.length = store[0][0].shape[2]
        room = self.length + min(extra, BLOCK)
        self.kv = []
        for k, v in store:
            # zeros, not garbage: a row that writes at its own slots (``step_at``) leaves slots
            # below ``end`` unwritten, and a masked score of NaN is still NaN
            kb = k.new_zeros((k.shape[0], k.shape[1], room, k.shape[3]))
            vb = v.new_zeros((v.shape[0], v.shape[1], room, v.shape[3]))
            kb[:, :, :self.length] = k
            vb[:, :, :self.length] = v
            self.kv.append((kb, vb))

    def adopt(self, buffers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        """Take ``buffers`` (per layer (b, H_kv, room, D) keys and values, the first ``length``
        slots filled: :func:`rlvr.engines.kv_cache.gather_kv`) as they are, without a copy."""
        self.kv, self.length = list(buffers), length

    def store(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(k[:, :, :self.length], v[:, :, :self.length]) for k, v in self.kv]

    def take(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A copy of ``rows``' keys and values (the rows the engine stops feeding)."""
        return [(k[rows, :, :self.length], v[rows, :, :self.length]) for k, v in self.kv]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (in this order) in the buffers."""
        self.kv = [(k[rows], v[rows]) for k, v in self.kv]

    def positions(self, n: int) -> None:
        """Positions below ``n`` will be fed: their rotary cos and sin are computed once, by the
        model's own rotary embedding, and looked up per step (where its frequencies are static)."""
        rotary = self.decoder.rotary_emb
        if not _static_rope(rotary) or (self.rope is not None and len(self.rope[0]) >= n):
            return
        emb = self.decoder.embed_tokens.weight
        probe = emb.new_empty((1, 1, emb.shape[-1]))  # the module reads its dtype and device only
        cos, sin = rotary(probe, position_ids=torch.arange(n, device=emb.device)[None])
        D = cos.shape[-1]
        sign = torch.ones(D, dtype=sin.dtype, device=sin.device)
        sign[:D // 2] = -1
        self.rope = (cos[0], sin[0] * sign)

    def step(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, ``ids`` (b,) at positions ``pos`` (b,); ``attn`` (b, >= L + 1)
        marks the slots each row attends to. Returns the next-token logits (b, V), fp32."""
        return self.extend(ids[:, None], attn, pos[:, None])

    def extend(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed ``n`` tokens per row at once (a turn's new tokens over a kept cache): ``ids``
        (b, n) left padded, ``pos`` (b, n) their positions, ``attn`` (b, L + n) the slots that
        hold a row's own tokens. The attention is causal over the new slots, as in
        ``model(...)`` with a cache. Returns the logits after each row's last token (b, V)."""
        end = self.length + ids.shape[1]
        return self._feed([_Part(ids, attn[:, :end].bool(), pos, self.length)], end)[0]

    def step_at(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, slot: torch.Tensor,
                end: int, more: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`step` with each row writing at its own slot ``slot`` (b,) (rows whose turns
        started apart: ``HFEngine.run``); ``end`` > every slot; ``attn`` (b, >= end) marks each
        row's own slots, the new one included. ``more`` = (rows, ids, attn, pos, slot): in the
        same pass, buffer rows ``rows`` (s,) take ``n`` more tokens ``ids`` (s, n, left padded)
        at their slots ``slot[j] ... slot[j] + n - 1`` (< ``end``), after this step's, with
        ``attn`` (s, >= end) and positions ``pos`` (s, n): an observation costs its tokens'
        share of one forward pass, not a pass of its own. Returns the logits of every row (b, V)
        and, with ``more``, after each of those rows' last token (s, V)."""
        b = ids.shape[0]
        parts = [_Part(ids[:, None], attn[:, :end].bool(), pos[:, None], slot[:, None],
                       torch.arange(b, device=ids.device), None)]
        if more is not None:
            rows, m_ids, m_attn, m_pos, m_slot = more
            parts.append(_Part(m_ids, m_attn[:, :end].bool(), m_pos,
                               m_slot[:, None] + torch.arange(m_ids.shape[1], device=ids.device), rows, rows))
        out = self._feed(parts, end)
        return out[0], (out[1] if more is not None else None)

    def _feed(self, parts: list["_Part"], end: int) -> list[torch.Tensor]:
        """Feed every part's tokens in one pass over the layers (projections and MLP on all of
        them at once, attention part by part, every part's keys written before any is read);
        the logits after each part's rows' last token (b_i, V) each."""
        if end > self.kv[0][0].shape[2]:
            grow = max(BLOCK, end - self.kv[0][0].shape[2])
            self.kv = [(torch.cat([k, k.new_zeros(k.shape[:2] + (grow,) + k.shape[3:])], 2),
                        torch.cat([v, v.new_zeros(v.shape[:2] + (grow,) + v.shape[3:])], 2))
                       for k, v in self.kv]
        D, hk = self.head_dim, self.kv[0][0].shape[1]
        ids = parts[0].ids if len(parts) == 1 else torch.cat([p.ids.reshape(-1) for p in parts])[None]
        x = self.decoder.embed_tokens(ids)  # (b, n, H), or all parts' tokens as one row (1, T, H)
        shapes = [p.ids.shape for p in parts]
        prep = [self._prepare(p, end, x) for p in parts]
        for (norm1, q_proj, k_proj, v_proj, q_norm, k_norm, o_proj, norm2, mlp, scale), (kb, vb) in zip(
                self.layers, self.kv):
            h = norm1(x)
            qa, ka, va = q_proj(h), k_proj(h), v_proj(h)
            split, off = [], 0
            for (b, n), p, (rotate, _, _) in zip(shapes, parts, prep):
                q, k, v = (t.reshape(-1, t.shape[-1])[off:off + b * n].view(b, n, -1, D) for t in (qa, ka, va))
                off += b * n
                if q_norm is not None:
                    q, k = q_norm(q), k_norm(k)
                q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, n, D)
                q, k = rotate(q), rotate(k)
                if p.into is None:  # every row's new tokens at the same slots
                    kb[:, :, p.where:p.where + n] = k
                    vb[:, :, p.where:p.where + n] = v
                else:  # kb[row, :, slot] per (row, new token): (b, n, H_kv, D)
                    kb[p.into[:, None], :, p.where] = k.transpose(1, 2)
                    vb[p.into[:, None], :, p.where] = v.transpose(1, 2)
                split.append(q)
            outs = []
            for (b, n), p, q, (_, mask, products) in zip(shapes, parts, split, prep):
                keys, values = ((kb[:, :, :end], vb[:, :, :end]) if p.rows is None
                                else (kb[p.rows, :, :end], vb[p.rows, :, :end]))
                if self.groups > 1:  # the query heads of one key/value head as one head's queries
                    q = q.reshape(b, q.shape[1] // self.groups, self.groups * n, D)
                if products:  # (b * H_kv, groups, end) scores; the buffers' views merge b and H_kv
                    bh = b * hk
                    scores = torch.baddbmm(mask, q.reshape(bh, -1, D),
                                           keys.reshape(bh, end, D).transpose(1, 2), alpha=scale)
                    o = torch.bmm(scores.softmax(-1), values.reshape(bh, end, D))
                else:
                    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
                outs.append(o.reshape(b, -1, n, D).transpose(1, 2).reshape(b, n, -1))
            o = outs[0] if len(parts) == 1 else torch.cat([t.reshape(-1, t.shape[-1]) for t in outs])[None]
            x = x + o_proj(o)
            x = x + mlp(norm2(x))
        self.length = max(self.length, end)
        if len(parts) == 1:
            return [self.head(self.norm(x[:, -1:])[:, 0]).float()]  # (b, V)
        last, off = [], 0
        for b, n in shapes:  # each row's last token
            last.append(off + n - 1 + n * torch.arange(b, device=x.device))
            off += b * n
        logits = self.head(self.norm(x[0, torch.cat(last)])).float()
        return list(logits.split([b for b, _ in shapes]))

    def _prepare(self, p: "_Part", end: int, x: torch.Tensor):
        """A part's rotation, additive attention mask and whether its attention is the batched
        products (one query per row on the CPU in fp32: three batched products, not the flash
        kernel, whose per-(row, head) overhead dominates at these sizes; same values up to
        rounding; in bf16 the kernel's fp32 softmax is kept)."""
        (b, n), own, dev = p.ids.shape, p.own, x.device
        if n == 1:
            mask = own[:, None, None, :]  # (b, 1, 1, end), shared by a kv head's query heads
        else:  # causal over the new slots; a padding query sees itself (its output is unused)
            new = torch.arange(n, device=dev)
            if p.into is None:
                seen = torch.arange(end, device=dev)[None, :] <= (p.where + new)[:, None]  # (n, end)
                mask = own[:, None, :] & seen[None]  # (b, n, end)
                mask[:, new, p.where + new] |= ~own[:, p.where:p.where + n]
            else:  # each row's new slots where they are
                seen = torch.arange(end, device=dev)[None, None, :] <= p.where[:, :, None]  # (b, n, end)
                mask = own[:, None, :] & seen
                mask[torch.arange(b, device=dev)[:, None], new, p.where] = True
            mask = mask[:, None]  # (b, 1, n, end)
        # the additive mask the attention kernel would build from the bool one in every layer
        mask = torch.zeros(mask.shape, dtype=x.dtype, device=dev).masked_fill_(~mask, float("-inf"))
        if self.groups > 1 and n > 1:  # each query head's n queries see the same slots
            mask = mask.repeat(1, 1, self.groups, 1)  # (b, 1, groups * n, end)
        products = n == 1 and dev.type == "cpu" and x.dtype == torch.float32
        if products:
            hk = self.kv[0][0].shape[1]
            mask = mask.expand(b, hk, 1, end).reshape(b * hk, 1, end)
        return self._rotation(x, p.pos), mask, products

    def _rotation(self, x: torch.Tensor, pos: torch.Tensor):
        """The rotary embedding at positions ``pos`` (b, n), as a function of q or k (b, heads,
        n, D): ``x * cos + rotate_half(x) * sin``, transformers' formula. From the table of
        :meth:`positions` where there is one: the half rotation is then a swap of the halves,
        its sign folded into the tabled sin (the same products, bit for bit)."""
        if self.rope is None or x.device != self.rope[0].device:
            cos, sin = self.decoder.rotary_emb(x, position_ids=pos)  # (b, n, D) each
            cos, sin = cos[:, None], sin[:, None]  # (b, 1, n, D)
            return lambda t: (t * cos) + (_rotate_half(t) * sin)
        table_cos, table_sin = self.rope
        cos, sin = F.embedding(pos, table_cos)[:, None], F.embedding(pos, table_sin)[:, None]
        half = cos.shape[-1] // 2
        return lambda t: (t * cos) + (torch.cat((t[..., half:], t[..., :half]), dim=-1) * sin)
