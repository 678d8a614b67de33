"""The HF engine's decode step for Llama-family models, without transformers' per-call machinery.

A decode step feeds one token per row. Through ``model(...)`` it also builds a 4-D mask, resolves
the attention function, runs the output-recording decorators and appends every layer's new key
and value to the cache with a ``torch.cat`` (a copy of the whole cache, per layer, per token). On a
small model those cost more than the matrix products. :class:`FastDecoder` runs the same modules
(the embedding, each layer's norms, projections and MLP, the rotary embedding, the head) in the
same order, with the attention call transformers' ``sdpa`` implementation makes for one query, on
key/value buffers grown in blocks and written in place. The logits equal the model's up to float
rounding (the test compares the two paths).

A later turn's new tokens (the observation, after the last sampled token) go in through
:meth:`FastDecoder.extend`: the kept rows are gathered straight into its buffers and the new
tokens run causally over them with the attention call transformers makes for several queries,
so the turn costs one copy of the kept keys and values, not three.

It applies to the model types whose layers are exactly Llama's (``llama``, ``qwen2``, ``mistral``,
and ``qwen3`` with its per-head q/k norms), full attention on every layer, the ``sdpa`` or
``eager`` attention implementation; anything else (sliding windows, other architectures, FSDP)
decodes through ``model(...)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlvr.core.models import full_attention, plain_head

BLOCK = 64  # key/value slots added at a time when a row's buffer is full


def _linear(module):
    """``module`` as a function: a plain ``nn.Linear`` through ``F.linear`` (no module call) on
    the weights it holds when called, anything else (a LoRA layer) called as it is."""
    if type(module) is torch.nn.Linear:
        return lambda x: F.linear(x, module.weight, module.bias)
    return module


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


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
            self.layers.append((layer.input_layernorm, _linear(a.q_proj), _linear(a.k_proj),
                                _linear(a.v_proj), getattr(a, "q_norm", None), getattr(a, "k_norm", None),
                                _linear(a.o_proj), layer.post_attention_layernorm, layer.mlp, a.scaling))
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.length = 0

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
            kb = k.new_empty((k.shape[0], k.shape[1], room, k.shape[3]))
            vb = v.new_empty((v.shape[0], v.shape[1], room, v.shape[3]))
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

    def step(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, ``ids`` (b,) at positions ``pos`` (b,); ``attn`` (b, >= L + 1)
        marks the slots each row attends to. Returns the next-token logits (b, V), fp32."""
        return self._feed(ids[:, None], attn, pos[:, None])

    def extend(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Feed ``n`` tokens per row at once (a turn's new tokens over a kept cache): ``ids``
        (b, n) left padded, ``pos`` (b, n) their positions, ``attn`` (b, L + n) the slots that
        hold a row's own tokens. The attention is causal over the new slots, as in
        ``model(...)`` with a cache. Returns the logits after each row's last token (b, V)."""
        return self._feed(ids, attn, pos)

    def _feed(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        (b, n), D, slot = ids.shape, self.head_dim, self.length
        end = slot + n
        if end > self.kv[0][0].shape[2]:
            grow = max(BLOCK, end - self.kv[0][0].shape[2])
            self.kv = [(torch.cat([k, k.new_empty(k.shape[:2] + (grow,) + k.shape[3:])], 2),
                        torch.cat([v, v.new_empty(v.shape[:2] + (grow,) + v.shape[3:])], 2))
                       for k, v in self.kv]
        own = attn[:, :end].bool()  # (b, end): the slots that hold each row's own tokens
        if n == 1:
            mask = own[:, None, None, :]  # (b, 1, 1, end), shared by a kv head's query heads
        else:  # causal over the new slots; a padding query sees itself (its output is unused)
            new = torch.arange(n, device=ids.device)
            seen = torch.arange(end, device=ids.device)[None, :] <= (slot + new)[:, None]  # (n, end)
            mask = own[:, None, :] & seen[None]  # (b, n, end)
            mask[:, new, slot + new] |= ~own[:, slot:]
            mask = mask[:, None]  # (b, 1, n, end)
        x = self.decoder.embed_tokens(ids)  # (b, n, H)
        cos, sin = self.decoder.rotary_emb(x, position_ids=pos)  # (b, n, D) each
        cos, sin = cos[:, None], sin[:, None]  # (b, 1, n, D)
        for (norm1, q_proj, k_proj, v_proj, q_norm, k_norm, o_proj, norm2, mlp, scale), (kb, vb) in zip(
                self.layers, self.kv):
            h = norm1(x)
            q, k, v = q_proj(h).view(b, n, -1, D), k_proj(h).view(b, n, -1, D), v_proj(h).view(b, n, -1, D)
            if q_norm is not None:
                q, k = q_norm(q), k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, n, D)
            q = (q * cos) + (_rotate_half(q) * sin)
            k = (k * cos) + (_rotate_half(k) * sin)
            kb[:, :, slot:end] = k
            vb[:, :, slot:end] = v
            keys, values = kb[:, :, :end], vb[:, :, :end]
            if self.groups > 1 and n == 1:  # the query heads of one key/value head as one query
                q = q.reshape(b, q.shape[1] // self.groups, self.groups, D)
            elif self.groups > 1:  # as transformers' sdpa does for several queries
                keys, values = _repeat_kv(keys, self.groups), _repeat_kv(values, self.groups)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
            o = o.reshape(b, -1, n, D).transpose(1, 2).reshape(b, n, -1)
            x = x + o_proj(o)
            x = x + mlp(norm2(x))
        self.length = end
        return self.head(self.decoder.norm(x[:, -1:])[:, 0]).float()  # (b, V)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(b, H_kv, L, D) -> (b, H_kv * groups, L, D), each key/value head once per query head."""
    b, h, L, D = x.shape
    return x[:, :, None].expand(b, h, groups, L, D).reshape(b, h * groups, L, D)
