"""HFEngine: logprobs match a fresh forward pass, stop strings across tokens, seeds."""

from types import SimpleNamespace

import pytest
import torch

from rlvr.engines.base import SamplingParams
from rlvr.engines.hf import HFEngine


def forward_logprobs(model, ids, temperature):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    logp = torch.log_softmax(logits / temperature, -1)
    return logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_logprobs_match_fresh_forward(tiny_model, tiny_tokenizer, temperature, top_p):
    tok = tiny_tokenizer
    engine = HFEngine(tiny_model, tok)
    prompts = [tok.encode("What is 2+3?"), tok.encode("Where was the author born? Paris is")]
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=24, temperature=temperature,
                                                   top_p=top_p, seed=3))
    for p, out in zip(prompts, outs):  # batched, left-padded generation vs unpadded forward
        full = p + out.token_ids
        ref = forward_logprobs(tiny_model, full, temperature or 1.0)[len(p) - 1:]
        assert len(out.logprobs) == len(out.token_ids) > 0
        assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-4)


def test_seeded_sampling_is_reproducible(tiny_model, tiny_tokenizer):
    engine = HFEngine(tiny_model, tiny_tokenizer)
    prompts = [tiny_tokenizer.encode("What is")] * 3
    a = engine.generate(prompts, SamplingParams(max_new_tokens=16, seed=7))
    b = engine.generate(prompts, SamplingParams(max_new_tokens=16, seed=7))
    c = engine.generate(prompts, SamplingParams(max_new_tokens=16, seed=8))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


class ForcedModel(torch.nn.Module):
    """Emits a fixed token script (greedy), whatever the context: lets tests place stop strings."""

    def __init__(self, script, vocab):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True):
        step = cache.forced_step = getattr(cache, "forced_step", -1) + 1  # calls on this cache
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 10.0
        return SimpleNamespace(logits=logits, cache=cache)


def test_stop_string_spanning_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    script = tok.encode("abc </calc> more text", add_special_tokens=False)
    stop_ids = tok.encode("</calc>", add_special_tokens=False)
    assert len(stop_ids) > 1  # the stop string really spans several tokens
    engine = HFEngine(ForcedModel(script, len(tok)), tok)
    [out] = engine.generate([tok.encode("x")], SamplingParams(max_new_tokens=30, temperature=0,
                                                              stop=["</calc>"]))
    text = tok.decode(out.token_ids)
    assert out.finish_reason == "stop" and out.stop_string == "</calc>"
    assert text.endswith("</calc>") and "more" not in text
    assert "</calc>" not in tok.decode(out.token_ids[:-1])  # stopped at the completing token


def test_stop_string_ending_inside_a_token(tiny_tokenizer):
    tok = tiny_tokenizer
    script = tok.encode("pick 42 then", add_special_tokens=False)
    engine = HFEngine(ForcedModel(script, len(tok)), tok)
    [out] = engine.generate([tok.encode("x")], SamplingParams(max_new_tokens=30, temperature=0,
                                                              stop=["4"]))
    assert out.finish_reason == "stop" and "4" in tok.decode(out.token_ids)
    assert "then" not in tok.decode(out.token_ids)


def test_eos_and_length(tiny_tokenizer):
    tok = tiny_tokenizer
    script = tok.encode("ok", add_special_tokens=False) + [tok.eos_token_id]
    engine = HFEngine(ForcedModel(script, len(tok)), tok)
    [out] = engine.generate([tok.encode("x")], SamplingParams(max_new_tokens=30, temperature=0))
    assert out.finish_reason == "eos" and out.token_ids[-1] == tok.eos_token_id
    [out] = engine.generate([tok.encode("x")], SamplingParams(max_new_tokens=1, temperature=0))
    assert out.finish_reason == "length" and len(out.token_ids) == 1


def test_bad_params_name_the_setting():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
