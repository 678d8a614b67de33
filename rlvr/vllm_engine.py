"""VLLMEngine: the Engine protocol on vLLM (optional extra ``rlvr[vllm]``, GPU), imported lazily.

Token ids go in as ``TokensPrompt``; the sampled token ids and the logprob of each come back.
``logprobs_mode="processed_logprobs"`` makes vLLM report log-probabilities after temperature
scaling, the distribution tokens were sampled from — equal to the learner's
``log_softmax(logits / T)`` when ``top_p == 1`` (with top-p, vLLM renormalises inside the nucleus;
the learner's importance ratio then starts slightly off 1 on the first epoch).
Stop strings are kept in the output (``include_stop_str_in_output``); vLLM's ``token_ids`` always
hold every sampled token, so nothing is re-encoded.
"""

from __future__ import annotations

from rlvr.engine import Completion, SamplingParams


class VLLMEngine:
    def __init__(self, model: str, *, gpu_memory_utilization: float = 0.5, dtype: str = "auto",
                 seed: int = 0, **engine_kwargs) -> None:
        try:
            import vllm
        except ImportError as e:
            raise ImportError("rollout.engine = vllm needs `pip install 'rlvr[vllm]'` on a GPU machine") from e
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                            seed=seed, logprobs_mode="processed_logprobs",
                            enable_prefix_caching=True, **engine_kwargs)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
        sp = self._vllm.SamplingParams(
            n=1, temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
            include_stop_str_in_output=True, logprobs=0, seed=params.seed)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sp,
                                 use_tqdm=False)
        return [_completion(o.outputs[0]) for o in outs]

    def load_weights(self, model_or_state_dict) -> None:
        """Copy new policy weights into the colocated vLLM model, then drop stale prefix caches."""
        sd = getattr(model_or_state_dict, "state_dict", lambda: model_or_state_dict)()
        worker = self.llm.llm_engine.model_executor.driver_worker
        runner = getattr(getattr(worker, "worker", worker), "model_runner")
        runner.model.load_weights(weights=list(sd.items()))
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        self.llm = None


def _completion(out) -> Completion:
    """One vLLM ``CompletionOutput`` → :class:`Completion`."""
    ids = list(out.token_ids)
    # out.logprobs: one {token_id: Logprob} dict per sampled token, holding at least that token
    logprobs = [float(step[tid].logprob) for step, tid in zip(out.logprobs or [], ids)]
    if len(logprobs) != len(ids):
        raise RuntimeError(f"vLLM returned {len(ids)} tokens but {len(logprobs)} logprobs")
    if out.finish_reason == "length":
        return Completion(ids, logprobs, "length")
    if isinstance(out.stop_reason, str):  # a stop string matched
        return Completion(ids, logprobs, "stop", out.stop_reason)
    return Completion(ids, logprobs, "eos")  # EOS, or a stop token id
