"""KV caches of the HF engine: build one, read its tensors, and gather rows of kept caches.

A kept cache (:class:`KVStore`) is a plain list of per-layer ``(keys, values)`` tensors, each
(b, heads, L, head_dim), with a (b, L) bool mask of the slots that hold a row's own tokens (a
left-padded prompt, or a row that finished before its batch-mates, leaves slots that are not its
own). :func:`gather_rows` builds a new left-padded cache from any rows' first ``k`` own slots —
the sharing of one prompt's prefill across its samples and the reuse of an episode's cache on its
next turn both come down to it. Only plain full-attention caches (``DynamicCache`` of
``DynamicLayer``) are kept; a sliding-window or hybrid cache is not (its slots are not a plain
record of every token), and the engine prefills afresh.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass
class KVStore:
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (b, H, L, D) keys and values
    valid: torch.Tensor  # (b, L) bool: slot holds the row's own token


def new_cache(model):
    """An empty ``DynamicCache`` for ``model`` (built from its config where the release takes
    one, so hybrid models get their own layer types)."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    if config is not None and "config" in inspect.signature(DynamicCache.__init__).parameters:
        try:
            return DynamicCache(config=config)
        except Exception:  # a config transformers does not know (a test stub): a plain cache
            pass
    return DynamicCache()


def store_of(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The cache's per-layer (keys, values), or None where it is not a plain full-attention
    cache that every layer filled."""
    from transformers import DynamicCache

    if type(cache) is not DynamicCache:
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.56: one object per layer
        from transformers.cache_utils import DynamicLayer

        if not layers or any(type(l) is not DynamicLayer or not getattr(l, "is_initialized", False)
                             or l.keys is None or l.keys.dim() != 4 for l in layers):
            return None
        return [(l.keys, l.values) for l in layers]
    keys, values = getattr(cache, "key_cache", None), getattr(cache, "value_cache", None)
    if not keys or any(k is None or k.dim() != 4 for k in keys):
        return None
    return list(zip(keys, values))


def gather_rows(model, stores: list[KVStore | None], index: list[int], keep: list[int], dev):
    """A new cache whose row ``j`` holds the first ``keep[j]`` own slots of row ``index[j]`` of
    ``stores[j]`` (none where ``keep[j]`` is 0), right-aligned; and its (b, max keep) bool mask.

    The tokens keep their positions (the caller passes them as ``position_ids``), so the keys
    are the ones a fresh prefill of those tokens computes."""
    layers, past = gather_kv(stores, index, keep, dev)
    cache = new_cache(model)
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache, past


def gather_kv(stores: list[KVStore | None], index: list[int], keep: list[int], dev, room: int = 0
              ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """:func:`gather_rows` as per-layer (keys, values) tensors, each (b, H, Lc + room, D) with
    the gathered slots in the first Lc = max(keep) (``room`` free slots after them, for a
    decoder that writes in place); and the (b, Lc) bool mask of the gathered slots."""
    b, Lc = len(keep), max(keep)
    past = torch.zeros((b, Lc), dtype=torch.bool, device=dev)
    groups: dict[int, tuple[KVStore, list[int]]] = {}
    for j, (st, k) in enumerate(zip(stores, keep)):
        if k:
            groups.setdefault(id(st), (st, []))[1].append(j)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for st, targets in groups.values():
        rows = torch.tensor([index[j] for j in targets], device=dev)
        k = torch.tensor([keep[j] for j in targets], device=dev)
        valid = st.valid[rows]  # (n, L)
        sel = valid & (valid.cumsum(-1) <= k[:, None])  # the first k own slots of each row
        slot = torch.arange(valid.shape[1], device=dev).expand_as(valid)
        # own slots sorted to the right end, in token order; -1 marks padding on the left
        slots = torch.where(sel, slot, torch.full_like(slot, -1)).sort(-1).values
        # (n, Lc): a store shorter than the longest kept row (another chunk's, or rows dropped
        # from a batch early) is padded on the left
        slots = (torch.nn.functional.pad(slots, (Lc - slots.shape[1], 0), value=-1)
                 if slots.shape[1] < Lc else slots[:, -Lc:])
        tgt = torch.tensor(targets, device=dev)
        past[tgt] = slots >= 0
        P = slots.clamp(min=0)  # (n, Lc)
        if not out:
            out = [tuple(kv.new_zeros((b, kv.shape[1], Lc + room, kv.shape[3])) for kv in layer)
                   for layer in st.layers]
        for dst, layer in zip(out, st.layers):
            for d, kv in zip(dst, layer):  # kv[rows, :, P]: (n, Lc, H, D)
                d[tgt, :, :Lc] = kv[rows[:, None], :, P].permute(0, 2, 1, 3)
    return out, past
