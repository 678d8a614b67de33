"""``make_engine``: the engine a run's settings name (in-process HF, colocated vLLM, or rollout servers)."""

from __future__ import annotations

from rlvr.engines.base import Engine
from rlvr.engines.hf import HFEngine
from rlvr.engines.server import RemoteEngine


def make_engine(kind: str, model, tokenizer, model_path: str | None = None,
                max_batch_size: int | None = None, rollout=None,
                weights_dir: str | None = None) -> Engine:
    """``rollout.engine``: ``hf`` shares the training model; ``vllm`` loads ``model_path`` in vLLM.
    ``max_batch_size`` (hf): rows per forward pass, None = the whole batch (``rollout.max_batch_size``).
    ``rollout`` (a ``RolloutConfig``) gives the vLLM settings; its ``servers``, when set, make a
    ``RemoteEngine`` over rollout servers instead (``kind`` is then what the servers run), which
    writes pushed weights to ``rollout.weights_dir`` or else ``weights_dir``."""
    if rollout is not None and rollout.servers:
        return RemoteEngine(list(rollout.servers), timeout_s=rollout.server_timeout_s,
                            weights_dir=rollout.weights_dir or weights_dir)
    if kind == "hf":
        return HFEngine(model, tokenizer, max_batch_size=max_batch_size)
    if kind == "vllm":
        from rlvr.engines.vllm import VLLMEngine, vllm_options

        if not model_path:
            raise ValueError("rollout.engine = vllm needs model.name_or_path to be a hub id or directory")
        return VLLMEngine(model_path, **({} if rollout is None else vllm_options(rollout)))
    raise ValueError(f"rollout.engine {kind!r} is not hf or vllm")
