"""VLLMEngine against a fake ``vllm`` module shaped after vLLM's documented V1 offline API.

The fake records every call in order, refuses to generate while asleep (as vLLM does), and runs
``collective_rpc`` the way vLLM's workers do: it imports ``worker_extension_cls`` by name and calls
the method on a worker whose ``model_runner.model.load_weights`` records what it was given.
vLLM itself is not run here (no GPU); docs/scale.md says what this does and does not cover.
"""

import importlib
import logging
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from rlvr.engines.base import SamplingParams


class FakeLLM:
    """Records calls; answers each prompt with its last id + 1, + 2, + 3."""

    def __init__(self, events, **kw):
        self.events, self.init = events, kw
        self.sleeping: set[str] = set()
        self.loaded: list = []  # what the worker's model.load_weights received
        self.untouched: list[str] = []  # names the fake model reports as not loaded
        cls_path = kw["worker_extension_cls"]
        mod, _, name = cls_path.rpartition(".")
        ext = getattr(importlib.import_module(mod), name)
        model = SimpleNamespace(load_weights=self._load_weights, named_parameters=self._named)
        self.worker = type("Worker", (ext,), {})()  # vLLM mixes the extension into its worker
        self.worker.model_runner = SimpleNamespace(model=model)
        self.outputs = None  # overrides of the next generate's outputs

    def _load_weights(self, weights):
        self.loaded = list(weights)
        return {n for n, _ in self.loaded}

    def _named(self):
        return [(n, None) for n, _ in self.loaded] + [(n, None) for n in self.untouched]

    def generate(self, prompts, sampling_params, use_tqdm=True):
        if self.sleeping:
            raise RuntimeError(f"generate while asleep: {sorted(self.sleeping)}")
        self.events.append("generate")
        self.last = (prompts, sampling_params)
        if self.outputs is not None:
            return self.outputs
        outs = []
        for i, p in enumerate(prompts):
            ids = [p["prompt_token_ids"][-1] + k for k in range(1, 4)]
            lps = [{t: SimpleNamespace(logprob=-0.1 * (k + 1)), 999: SimpleNamespace(logprob=-9.0)}
                   for k, t in enumerate(ids)]
            kind = [("stop", "</search>"), ("stop", None), ("length", None), ("stop", 7)][i % 4]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(
                token_ids=ids, logprobs=lps, finish_reason=kind[0], stop_reason=kind[1])]))
        return outs

    def sleep(self, level=1):
        self.events.append(f"sleep({level})")
        self.sleeping = {"weights", "kv_cache"}

    def wake_up(self, tags=None):
        self.events.append(f"wake_up({tags})")
        self.sleeping -= set(tags or ("weights", "kv_cache"))

    def reset_prefix_cache(self):
        self.events.append("reset_prefix_cache")

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        if "weights" in self.sleeping:
            raise RuntimeError("weights pushed into sleeping memory")
        self.events.append(f"collective_rpc({method})")
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]


@pytest.fixture
def fake_vllm(monkeypatch):
    events: list[str] = []
    made: list[FakeLLM] = []

    def LLM(**kw):
        made.append(FakeLLM(events, **kw))
        return made[-1]

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return SimpleNamespace(events=events, llm=lambda: made[-1])


def test_token_in_token_out_contract(fake_vllm):
    from rlvr.engines.vllm import EXTENSION, VLLMEngine

    engine = VLLMEngine("some/model", gpu_memory_utilization=0.3)
    init = fake_vllm.llm().init
    assert init["logprobs_mode"] == "processed_logprobs" and init["enable_prefix_caching"]
    assert init["enable_sleep_mode"] and init["worker_extension_cls"] == EXTENSION
    assert init["gpu_memory_utilization"] == 0.3 and init["model"] == "some/model"
    outs = engine.generate([[5], [10, 11], [20], [30]],
                           SamplingParams(max_new_tokens=3, temperature=0.7, top_p=0.9,
                                          stop=["</search>"], seed=1))
    prompts, sps = fake_vllm.llm().last
    assert prompts == [{"prompt_token_ids": [5]}, {"prompt_token_ids": [10, 11]},
                       {"prompt_token_ids": [20]}, {"prompt_token_ids": [30]}]  # ids, not text
    sp = sps[0]
    assert sp.include_stop_str_in_output and sp.logprobs == 0 and sp.max_tokens == 3 and sp.n == 1
    assert sp.stop == ["</search>"] and sp.temperature == 0.7 and sp.top_p == 0.9
    # one seed per request, so copies of one prompt do not sample the same tokens
    assert [s.seed for s in sps] == [1, 2, 3, 4]
    # the sampled token's logprob, not the other entry (999 → -9) of each step's dict
    assert outs[0].token_ids == [6, 7, 8] and outs[0].logprobs == pytest.approx([-0.1, -0.2, -0.3])
    assert (outs[0].finish_reason, outs[0].stop_string) == ("stop", "</search>")
    assert outs[1].token_ids == [12, 13, 14] and outs[1].finish_reason == "eos"
    assert outs[2].finish_reason == "length"
    assert (outs[3].finish_reason, outs[3].stop_string) == ("eos", None)  # a stop token id


def test_no_seed_shares_one_sampling_params(fake_vllm):
    from rlvr.engines.vllm import VLLMEngine

    VLLMEngine("m").generate([[1], [2]], SamplingParams(max_new_tokens=2, temperature=0))
    _, sp = fake_vllm.llm().last
    assert sp.seed is None and sp.temperature == 0 and sp.stop is None


def test_load_weights_sends_every_parameter_by_name_and_shape(fake_vllm, tiny_model):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m")
    engine.load_weights(tiny_model)
    sent = fake_vllm.llm().loaded
    expected = tiny_model.state_dict()
    assert [n for n, _ in sent] == list(expected)
    assert all(t.shape == expected[n].shape for n, t in sent)
    # in-process: the trainer's tensors themselves, no copies
    assert all(t.data_ptr() == expected[n].data_ptr() for n, t in sent)
    assert fake_vllm.events[-2:] == ["collective_rpc(update_weights)", "reset_prefix_cache"]
    assert engine.weights_version == 1
    engine.load_weights({"w": torch.ones(2)})  # a state dict works too
    assert [n for n, _ in fake_vllm.llm().loaded] == ["w"] and engine.weights_version == 2


def test_sleep_and_wake_bracket_the_update_in_order(fake_vllm, tiny_model):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m")
    params = SamplingParams(max_new_tokens=3)
    engine.generate([[1]], params)
    engine.sleep()
    engine.sleep()  # already asleep: no second call
    engine.load_weights(tiny_model)
    engine.generate([[1]], params)
    assert fake_vllm.events == [
        "generate", "sleep(1)",
        "wake_up(['weights'])", "collective_rpc(update_weights)", "reset_prefix_cache",
        "wake_up(['kv_cache'])", "generate"]


def test_generate_after_sleep_without_push_wakes_everything(fake_vllm):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m")
    engine.sleep()
    engine.generate([[1]], SamplingParams(max_new_tokens=3))  # e.g. an evaluation
    assert fake_vllm.events == ["sleep(1)", "wake_up(['weights'])", "wake_up(['kv_cache'])",
                                "generate"]


def test_level_two_sleep_refuses_to_generate_before_a_push(fake_vllm, tiny_model):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m", sleep_level=2)
    engine.sleep()
    with pytest.raises(RuntimeError, match="level 2"):
        engine.generate([[1]], SamplingParams(max_new_tokens=3))
    engine.load_weights(tiny_model)
    assert engine.generate([[1]], SamplingParams(max_new_tokens=3))[0].token_ids == [2, 3, 4]
    assert fake_vllm.events[0] == "sleep(2)"


def test_sleep_disabled_is_a_no_op(fake_vllm):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m", sleep=False)
    engine.sleep()
    assert fake_vllm.events == [] and fake_vllm.llm().init["enable_sleep_mode"] is False


def test_untouched_parameters_are_reported(fake_vllm, caplog):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m")
    fake_vllm.llm().untouched = ["model.layers.0.mlp.gate_up_proj.weight"]
    with caplog.at_level(logging.WARNING, logger="rlvr.engines.vllm"):
        engine.load_weights({"model.embed_tokens.weight": torch.zeros(3, 2)})
    assert "gate_up_proj" in caplog.text and "1 parameters" in caplog.text


def test_lora_names_are_refused(fake_vllm):
    from rlvr.engines.vllm import VLLMEngine

    with pytest.raises(ValueError, match="merge the adapter"):
        VLLMEngine("m").load_weights({"base_model.model.lm_head.weight": torch.zeros(1)})


def test_bad_outputs_raise_with_the_request(fake_vllm):
    from rlvr.engines.vllm import VLLMEngine

    engine = VLLMEngine("m")
    step = {5: SimpleNamespace(logprob=-1.0)}
    fake_vllm.llm().outputs = [SimpleNamespace(outputs=[SimpleNamespace(
        token_ids=[6], logprobs=[step], finish_reason="length", stop_reason=None)])]
    with pytest.raises(RuntimeError, match="request 0 miss sampled token 6"):
        engine.generate([[5]], SamplingParams(max_new_tokens=1))
    fake_vllm.llm().outputs = [SimpleNamespace(outputs=[SimpleNamespace(
        token_ids=[5], logprobs=[step], finish_reason="abort", stop_reason=None)])]
    with pytest.raises(RuntimeError, match="'abort'"):
        engine.generate([[5]], SamplingParams(max_new_tokens=1))
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        engine.generate([[5], []], SamplingParams(max_new_tokens=1))


def test_bad_settings_are_refused(fake_vllm):
    from rlvr.engines.vllm import VLLMEngine

    with pytest.raises(ValueError, match="vllm_sleep_level"):
        VLLMEngine("m", sleep_level=3)
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        VLLMEngine("m", gpu_memory_utilization=1.5)


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from rlvr.engines.vllm import VLLMEngine

    with pytest.raises(ImportError, match=r"rlvr\[vllm\]"):
        VLLMEngine("x")


def test_make_engine_passes_the_rollout_settings(fake_vllm):
    from rlvr.core.config import RolloutConfig
    from rlvr.engines.factory import make_engine

    cfg = RolloutConfig(max_total_tokens=300, vllm_gpu_memory_utilization=0.25, vllm_sleep_level=2)
    engine = make_engine("vllm", None, None, model_path="some/dir", rollout=cfg)
    init = fake_vllm.llm().init
    assert init["gpu_memory_utilization"] == 0.25 and init["max_model_len"] == 300
    assert init["enable_sleep_mode"] and engine.sleep_level == 2 and init["dtype"] == "auto"
    cfg.vllm_max_model_len, cfg.vllm_sleep = 1024, False
    make_engine("vllm", None, None, model_path="some/dir", rollout=cfg)
    assert fake_vllm.llm().init["max_model_len"] == 1024
    assert fake_vllm.llm().init["enable_sleep_mode"] is False
