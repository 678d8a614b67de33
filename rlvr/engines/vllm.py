"""VLLMEngine: the Engine protocol on vLLM (optional extra ``rlvr[vllm]``, GPU), imported lazily.

Colocated mode: vLLM lives in the trainer's process and on its GPU. Between generation and the
policy update the loop calls :meth:`VLLMEngine.sleep`, which frees vLLM's GPU memory; after the
update :meth:`VLLMEngine.load_weights` wakes the weights, pushes the trainer's tensors into them in
place and drops the prefix cache computed with the old weights; the next ``generate`` wakes the KV
cache. Written against vLLM's V1 engine as documented for v0.10 – v0.11 and still current:

- offline API: ``LLM.generate(prompts, sampling_params)`` with ``vllm.inputs.TokensPrompt`` and
  one ``SamplingParams`` per prompt (the ``LLM`` class reference,
  https://docs.vllm.ai/en/stable/api/vllm/entrypoints/llm/, and the offline inference guide);
- sleep mode: ``LLM(enable_sleep_mode=True)``, ``LLM.sleep(level=1|2)``,
  ``LLM.wake_up(tags=["weights"] | ["kv_cache"] | None)``
  (https://docs.vllm.ai/en/latest/features/sleep_mode/): level 1 backs the weights up in CPU
  memory, level 2 discards them (right when every weight is pushed after each update anyway);
- weight push: ``LLM(worker_extension_cls="pkg.Class")`` mixes a class into every worker and
  ``LLM.collective_rpc("method", args=...)`` calls it there, as vLLM's
  ``examples/offline_inference/rlhf_utils.py`` (``ColocateWorkerExtension``) does; the worker's
  ``model_runner.model.load_weights(weights=[(hf_name, tensor), ...])`` maps Hugging Face names
  onto vLLM's fused layers. (vLLM >= 0.2x also ships a weight-transfer engine,
  https://docs.vllm.ai/en/stable/training/weight_transfer/, aimed at a trainer in another
  process; in-process the extension hands over tensors by reference, with no transport.)
- logprobs: ``SamplingParams(logprobs=0)`` returns, per sampled token, a ``{token_id: Logprob}``
  dict holding the sampled token; ``LLM(logprobs_mode="processed_logprobs")`` makes that value the
  log-softmax of the logits *after* temperature and top-k/top-p (``vllm/v1/sample/sampler.py``,
  ``TopKTopPSampler.forward_native``). With ``top_p == 1`` that equals rlvr's
  ``log_softmax(logits / T)``; with ``top_p < 1`` vLLM renormalises inside the nucleus, so its
  logprob is higher than the learner's by ``-log(nucleus mass)`` and the first-epoch importance
  ratio starts slightly below 1. Greedy (temperature 0) requests get ``log_softmax(logits)``,
  as rlvr's engines record.

The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set): the
extension then receives the trainer's tensors themselves, not serialised copies. Token ids go in
and come out; nothing is decoded to be re-encoded (vLLM's ``token_ids`` hold every sampled token,
including the one that completed a stop string).

vLLM gives each request its own random generator when it carries a seed, so copies of one prompt
in a batch with one seed would sample the same tokens; prompt ``i`` of a call therefore gets seed
``seed + i``. Nothing here runs vLLM itself in rlvr's tests: they drive this code against a fake
``vllm`` module that records every call (tests/test_vllm_engine.py; see docs/scale.md).
"""

from __future__ import annotations

import logging
import os

from rlvr.engines.base import Completion, SamplingParams

log = logging.getLogger(__name__)

#: qualified name vLLM imports in each worker (``worker_extension_cls``)
EXTENSION = "rlvr.engines.vllm.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into every vLLM worker by ``worker_extension_cls``: ``self`` is the worker, so
    ``self.model_runner.model`` is the model vLLM runs. Called through ``collective_rpc``."""

    def update_weights(self, weights: list) -> list[str] | None:
        """Copy ``[(hf_name, tensor), ...]`` into the running model in place. Returns the names of
        the model's parameters nothing was loaded into (``None`` when the model does not say)."""
        model = self.model_runner.model
        loaded = model.load_weights(weights=weights)
        if loaded is None:
            return None
        return sorted(name for name, _ in model.named_parameters() if name not in loaded)


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError("rollout.engine = vllm needs `pip install 'rlvr[vllm]'` on a GPU machine") from e
    return vllm


def named_tensors(model_or_state_dict) -> list:
    """A model's or state dict's ``[(name, tensor)]``, each tensor whole: a sharded (FSDP2
    ``DTensor``) parameter is gathered, since vLLM's loaders expect full checkpoint tensors."""
    if hasattr(model_or_state_dict, "state_dict"):
        items = model_or_state_dict.state_dict().items()
    elif isinstance(model_or_state_dict, dict):
        items = model_or_state_dict.items()
    else:
        raise TypeError(f"load_weights takes a model or a state dict, got "
                        f"{type(model_or_state_dict).__name__}")
    out = []
    for name, t in items:
        if hasattr(t, "full_tensor"):  # torch.distributed.tensor.DTensor
            t = t.full_tensor()
        out.append((name, t.detach()))
    if any(n.startswith("base_model.model.") for n, _ in out):
        raise ValueError("load_weights got a peft (LoRA) model's names (base_model.model.*): "
                         "merge the adapter first (merge_and_unload) — vLLM loads base names")
    return out


def vllm_options(rollout, dtype: str | None = None) -> dict:
    """:class:`VLLMEngine` keyword arguments from a ``RolloutConfig`` (``rollout.vllm_*``) and,
    optionally, ``model.dtype`` (vLLM runs in it; float32 keeps the checkpoint's own)."""
    return {"gpu_memory_utilization": rollout.vllm_gpu_memory_utilization,
            "sleep": rollout.vllm_sleep, "sleep_level": rollout.vllm_sleep_level,
            "max_model_len": rollout.vllm_max_model_len or rollout.max_total_tokens,
            "dtype": "auto" if dtype in (None, "float32") else dtype}


class VLLMEngine:
    """Colocated vLLM. ``sleep`` / ``load_weights`` bracket each policy update (see module doc)."""

    def __init__(self, model: str, *, tokenizer: str | None = None,
                 gpu_memory_utilization: float = 0.5, dtype: str = "auto", seed: int = 0,
                 sleep: bool = True, sleep_level: int = 1, max_model_len: int | None = None,
                 enforce_eager: bool = False, **engine_kwargs) -> None:
        if sleep_level not in (1, 2):
            raise ValueError(f"rollout.vllm_sleep_level must be 1 or 2, got {sleep_level}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"rollout.vllm_gpu_memory_utilization must be in (0, 1], got "
                             f"{gpu_memory_utilization}")
        vllm = _import_vllm()
        self._vllm = vllm
        # in-process engine core: collective_rpc passes our tensors by reference
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self._in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        kw = dict(model=model, tokenizer=tokenizer or model, dtype=dtype, seed=seed,
                  gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                  logprobs_mode="processed_logprobs", enable_prefix_caching=True,
                  enable_sleep_mode=sleep, worker_extension_cls=EXTENSION)
        if max_model_len:
            kw["max_model_len"] = max_model_len
        kw.update(engine_kwargs)
        self.llm = vllm.LLM(**kw)
        self.can_sleep, self.sleep_level = sleep, sleep_level
        self._asleep: set[str] = set()  # the sleep-mode tags now released: weights, kv_cache
        self._weights_dropped = False  # slept at level 2 and no weights pushed since
        self.weights_version = 0  # pushes so far

    # -- generation ----------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
        self._wake_all()
        base = dict(n=1, temperature=params.temperature, top_p=params.top_p,
                    max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                    include_stop_str_in_output=True, logprobs=0,
                    skip_special_tokens=False)  # stop strings match the text HFEngine decodes
        if params.seed is None:
            sp = self._vllm.SamplingParams(**base, seed=None)
        else:  # one seed per request (see module doc)
            sp = [self._vllm.SamplingParams(**base, seed=params.seed + i) for i in range(len(prompts))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sp,
                                 use_tqdm=False)
        if len(outs) != len(prompts):
            raise RuntimeError(f"vLLM answered {len(outs)} requests for {len(prompts)} prompts")
        return [_completion(o.outputs[0], i) for i, o in enumerate(outs)]

    # -- memory and weights --------------------------------------------------------------------
    def sleep(self) -> None:
        """Release vLLM's GPU memory for the policy update (no-op without sleep mode)."""
        if not self.can_sleep or self._asleep:
            return
        self.llm.sleep(level=self.sleep_level)
        self._asleep = {"weights", "kv_cache"}
        self._weights_dropped = self.sleep_level == 2

    def _wake(self, tag: str) -> None:
        if tag in self._asleep:
            self.llm.wake_up(tags=[tag])
            self._asleep.discard(tag)

    def _wake_all(self) -> None:
        if self._weights_dropped:
            raise RuntimeError("vLLM slept at level 2 (weights discarded) and no weights were "
                               "pushed since: call load_weights before generate")
        self._wake("weights")  # weights first: the KV cache is sized around them
        self._wake("kv_cache")

    def load_weights(self, model_or_state_dict) -> None:
        """Push a model's (or state dict's) weights into vLLM in place, then drop the prefix cache.
        Only the weights are woken: the KV cache waits for the next ``generate``."""
        weights = named_tensors(model_or_state_dict)
        if not self._in_process:  # through vLLM's serialiser: CPU tensors
            weights = [(n, t.cpu()) for n, t in weights]
        self._wake("weights")
        results = self.llm.collective_rpc("update_weights", args=(weights,))
        self._weights_dropped = False
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.weights_version += 1
        for missed in results or []:
            if missed:  # names that do not line up leave old weights in place
                log.warning("vLLM loaded nothing into %d parameters (e.g. %s): do the trainer's "
                            "names match the checkpoint's?", len(missed), ", ".join(missed[:3]))

    def close(self) -> None:
        self.llm = None


def _completion(out, index: int) -> Completion:
    """One vLLM ``CompletionOutput`` → :class:`Completion`."""
    ids = list(out.token_ids)
    # out.logprobs: one {token_id: Logprob} dict per sampled token, holding at least that token
    try:
        logprobs = [float(step[tid].logprob) for step, tid in zip(out.logprobs or [], ids)]
    except KeyError as e:
        raise RuntimeError(f"vLLM's logprobs for request {index} miss sampled token {e}") from None
    if len(logprobs) != len(ids):
        raise RuntimeError(f"vLLM returned {len(ids)} tokens but {len(logprobs)} logprobs for "
                           f"request {index}")
    if out.finish_reason == "length":
        return Completion(ids, logprobs, "length")
    if out.finish_reason != "stop":
        raise RuntimeError(f"vLLM request {index} finished with {out.finish_reason!r}")
    if isinstance(out.stop_reason, str):  # a stop string matched
        return Completion(ids, logprobs, "stop", out.stop_reason)
    return Completion(ids, logprobs, "eos")  # EOS, or a stop token id
