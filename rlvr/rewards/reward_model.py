"""Reward models: a causal LM body with a scalar head read at the last real token.

The model is a transformers ``AutoModelForSequenceClassification`` with ``num_labels = 1`` (the
body's weights come from any causal LM checkpoint; the head starts random), so it saves and loads
like any transformers model. Beside the weights, ``rlvr_reward_model.json`` records the mean and
standard deviation of the reward over a reference set (the held-out chosen responses when trained
by ``rlvr train rm``): used as a reward, the score is ``r - mean`` so that reference responses
score 0 on average (Stiennon et al. 2020, §3.4, https://arxiv.org/abs/2009.01325; Ziegler et al.
2019 normalise the same way).

The head is read at the last position whose attention mask is 1 — not at the last token that
differs from the pad id, which goes wrong when pad and EOS share an id and the response ends in EOS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from rlvr.core.models import pick_device, resolve_model_path

META_FILE = "rlvr_reward_model.json"


def build_reward_model(model_cfg, device: str | None = None):
    """A fresh reward model (random head) on the body named by a :class:`rlvr.core.config.ModelConfig`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer


    location, gguf = resolve_model_path(model_cfg.name_or_path, model_cfg)
    kw = {"gguf_file": gguf} if gguf else {}
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(model_cfg.dtype)
    if dtype is None:
        raise ValueError(f"model.dtype {model_cfg.dtype!r} is not float32, bfloat16 or float16")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_cfg.tokenizer or location, **kw)
        model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=1, dtype=dtype, **kw)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"reward model body {model_cfg.name_or_path!r} could not be loaded as a "
                                f"sequence classifier: {e}") from None
    _fix_pad(model, tokenizer)
    return model.to(device or pick_device()), tokenizer


def load_reward_model(path: str | Path, device: str | None = None):
    """``(model, tokenizer, meta)`` of a reward model saved by :func:`save_reward_model`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer


    p = check_reward_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(p)
    model = AutoModelForSequenceClassification.from_pretrained(p)
    if getattr(model.config, "num_labels", 1) != 1:
        raise ValueError(f"reward model {path}: expected one output (num_labels=1), "
                         f"got {model.config.num_labels}")
    _fix_pad(model, tokenizer)
    meta = json.loads((p / META_FILE).read_text()) if (p / META_FILE).exists() else {}
    model.to(device or pick_device()).eval()
    return model, tokenizer, meta


def check_reward_model_dir(path: str | Path, field: str = "reward model") -> Path:
    """``path`` as a Path if it looks like a saved reward model (without loading weights); else an
    error that starts with ``field`` (the config key that named it). A saved causal LM (an SFT or
    policy checkpoint) is refused here: its weights would load under a random scalar head."""
    p = Path(path)
    if not (p / "config.json").is_file():
        what = "does not exist" if not p.exists() else "is not a saved model directory (no config.json)"
        raise FileNotFoundError(f"{field}: {str(path)!r} {what}; give the final/ directory of an "
                                f"`rlvr train rm` run (e.g. runs/rm_tiny/final)")
    try:
        arch = json.loads((p / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError) as e:
        raise ValueError(f"{field}: {p / 'config.json'} could not be read: {e}") from None
    if arch and not any(str(a).endswith("ForSequenceClassification") for a in arch):
        raise ValueError(f"{field}: {str(path)!r} holds a {', '.join(map(str, arch))}, not a reward "
                         f"model (a sequence classifier with one output, as `rlvr train rm` saves)")
    return p


def save_reward_model(model, tokenizer, path: str | Path, meta: dict[str, Any]) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p)
    tokenizer.save_pretrained(p)
    (p / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return p


def _fix_pad(model, tokenizer) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id


def score_ids(model, seqs: Sequence[list[int]], pad_id: int) -> torch.Tensor:
    """Scalar reward of each token sequence, ``(N,)``, read at its last real token (with grad)."""
    dev = next(model.parameters()).device
    B, T = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
    ids, attn = ids.to(dev), attn.to(dev)
    last = attn.sum(-1) - 1  # (B,) index of the last real token (right padding)
    body = getattr(model, model.base_model_prefix, None)
    head = getattr(model, "score", None)
    if body is not None and isinstance(head, torch.nn.Module):
        hidden = body(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, H)
        picked = hidden[torch.arange(B, device=dev), last]  # (B, H)
        return head(picked).squeeze(-1).float()  # (B,)
    # Architectures without a ``score`` head: per-position logits, read at ``last`` ourselves.
    logits = model(input_ids=ids, attention_mask=attn).logits
    if logits.dim() == 3:  # (B, T, 1)
        logits = logits[torch.arange(B, device=dev), last]
    return logits.squeeze(-1).float()


@torch.no_grad()
def score_texts(model, tokenizer, texts: Sequence[str], *, max_length: int = 1024,
                batch_size: int = 16) -> list[float]:
    """Raw rewards of whole texts (prompt + response, already rendered). Long texts keep their end,
    where the head reads."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        seqs = []
        for t in texts[i:i + batch_size]:
            ids = tokenizer.encode(t, add_special_tokens=False)[-max_length:]
            seqs.append(ids or [pad_id])
        out.extend(score_ids(model, seqs, pad_id).tolist())
    return out
