"""VLLMEngine against a fake vllm module shaped after vLLM's documented offline API."""

import sys
import types
from types import SimpleNamespace

import pytest

from rlvr.engine import SamplingParams


@pytest.fixture
def fake_vllm(monkeypatch):
    calls = {}

    class LLM:
        def __init__(self, model, **kw):
            calls["init"] = dict(model=model, **kw)

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["generate"] = (prompts, sampling_params)
            outs = []
            for i, p in enumerate(prompts):
                ids = [p["prompt_token_ids"][-1] + k for k in range(1, 4)]
                lps = [{t: SimpleNamespace(logprob=-0.1 * (k + 1)), 999: SimpleNamespace(logprob=-9)}
                       for k, t in enumerate(ids)]
                kind = [("stop", "</search>"), ("stop", None), ("length", None)][i % 3]
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(
                    token_ids=ids, logprobs=lps, finish_reason=kind[0], stop_reason=kind[1])]))
            return outs

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return calls


def test_token_in_token_out_contract(fake_vllm):
    from rlvr.vllm_engine import VLLMEngine

    engine = VLLMEngine("some/model")
    assert fake_vllm["init"]["logprobs_mode"] == "processed_logprobs"
    outs = engine.generate([[5], [10], [20]], SamplingParams(max_new_tokens=3, temperature=0.7,
                                                             stop=["</search>"], seed=1))
    _, sp = fake_vllm["generate"]
    assert sp.include_stop_str_in_output and sp.logprobs == 0 and sp.max_tokens == 3
    assert sp.stop == ["</search>"] and sp.temperature == 0.7 and sp.seed == 1
    assert outs[0].token_ids == [6, 7, 8] and outs[0].logprobs == pytest.approx([-0.1, -0.2, -0.3])
    assert (outs[0].finish_reason, outs[0].stop_string) == ("stop", "</search>")
    assert outs[1].finish_reason == "eos" and outs[2].finish_reason == "length"


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from rlvr.vllm_engine import VLLMEngine

    with pytest.raises(ImportError, match=r"rlvr\[vllm\]"):
        VLLMEngine("x")
