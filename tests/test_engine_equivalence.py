"""The fast paths of HFEngine change no sampled token (issue 15).

Each sampled token is checked against the rule that defines it: row ``i`` at step ``t`` takes the
inverse-CDF pick of the seeded uniform ``u[i, t]`` under ``softmax(logits / T)`` of a fresh,
unpadded forward pass over the sequence so far. That holds whole-batch or chunked, with shared
prompt prefills, and across turns with the KV cache kept — so those paths agree with each other
token for token, and their logprobs with the learner's recomputation.
"""

import logging

import pytest
import torch

from rlvr.core.config import RolloutConfig
from rlvr.core.environment import Environment, StepResult
from rlvr.core.types import Task, Trajectory
from rlvr.engines.base import SamplingParams
from rlvr.engines.hf import HFEngine, _inverse_cdf, _sample, _StopMatcher
from rlvr.learners.batch import collate, token_logprobs
from rlvr.rollout.episodes import collect


def fresh_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()  # (L, V)


def check_against_rule(model, prompts, outs, params, atol=1e-4):
    """Every token is the inverse-CDF pick of its uniform; every logprob the fresh forward's."""
    g = torch.Generator().manual_seed(params.seed)
    u = torch.rand((len(prompts), params.max_new_tokens), generator=g, dtype=torch.float64)
    for i, (p, out) in enumerate(zip(prompts, outs)):
        full = p + out.token_ids
        z = fresh_logits(model, full)[len(p) - 1:-1] / params.temperature  # (n, V)
        probs = torch.softmax(z.double(), -1)
        cdf = probs.cumsum(-1)
        for t, tok in enumerate(out.token_ids):
            x = float(u[i, t]) * float(cdf[t, -1])
            lo = float(cdf[t, tok - 1]) if tok else 0.0
            # the pick of u is the token whose cdf interval holds u (1e-5: fp32 logits of a
            # padded batch vs an unpadded one may move an interval's edge that much)
            assert lo - 1e-5 <= x < float(cdf[t, tok]) + 1e-5, (i, t, tok)
        ref = torch.log_softmax(z, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(out.logprobs), ref, atol=atol)


def prompts_of(tok):
    texts = ["What is 2+3?", "What is 2+3?", "Where was the author born? Paris is", "What is 2+3?",
             "x", "Name a colour:"]
    return [tok.encode(t) for t in texts]


@pytest.mark.parametrize("max_batch_size", [None, 2])
def test_tokens_follow_the_seeded_rule(tiny_model, tiny_tokenizer, max_batch_size):
    # identical prompts share one prefill; chunks of 2 split groups across forward passes
    params = SamplingParams(max_new_tokens=12, temperature=0.9, seed=11)
    engine = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=max_batch_size)
    prompts = prompts_of(tiny_tokenizer)
    outs = engine.generate(prompts, params)
    check_against_rule(tiny_model, prompts, outs, params)
    assert len({tuple(o.token_ids) for o in outs[:2]}) == 2  # shared prefill, own samples


def test_max_batch_size_setting():
    from rlvr.core.config import TrainConfig
    from rlvr.engines.factory import make_engine

    cfg = TrainConfig()
    cfg.rollout.max_batch_size = -1
    with pytest.raises(ValueError, match="rollout.max_batch_size"):
        cfg.validate()
    assert make_engine("hf", torch.nn.Linear(1, 1), _Tok(), max_batch_size=3).max_batch_size == 3
    assert make_engine("hf", torch.nn.Linear(1, 1), _Tok()).max_batch_size is None  # whole batch


class _Tok:
    eos_token_id, pad_token_id = 0, 0


def test_chunking_changes_nothing(tiny_model, tiny_tokenizer):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=5, stop=["e"])
    prompts = prompts_of(tiny_tokenizer)
    whole = HFEngine(tiny_model, tiny_tokenizer).generate(prompts, params)
    chunked = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=1).generate(prompts, params)
    assert [o.token_ids for o in whole] == [o.token_ids for o in chunked]
    assert [o.finish_reason for o in whole] == [o.finish_reason for o in chunked]
    for a, b in zip(whole, chunked):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_inverse_cdf_draws_the_softmax_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 7) * 2
    n = 200_000
    u = torch.rand(n, dtype=torch.float64)
    nxt, lp = _sample(logits.expand(n, 7), 0.8, 1.0, u)
    freq = torch.bincount(nxt, minlength=7).double() / n
    p = torch.softmax(logits[0].double() / 0.8, -1)
    assert (freq - p).abs().max() < 0.005  # 3 standard errors of the largest p is about 0.0035
    assert torch.allclose(lp, torch.log_softmax(logits / 0.8, -1)[0][nxt].float(), atol=1e-6)
    # top-p 0.5: only the smallest prefix of sorted probabilities holding 0.5 is ever drawn,
    # renormalised; the recorded logprob stays the untruncated one
    nxt, lp = _sample(logits.expand(n, 7), 0.8, 0.5, u)
    sp, idx = p.sort(descending=True)
    k = int((sp.cumsum(0) - sp < 0.5).sum())
    assert set(nxt.unique().tolist()) == set(idx[:k].tolist())
    freq = torch.bincount(nxt, minlength=7).double() / n
    assert (freq[idx[:k]] - sp[:k] / sp[:k].sum()).abs().max() < 0.005
    assert torch.allclose(lp, torch.log_softmax(logits / 0.8, -1)[0][nxt].float(), atol=1e-6)


def test_two_level_search_equals_one_cumulative_sum():
    # blocks of 4 over 10 entries (a short last block), zero weights inside and at the end
    g = torch.Generator().manual_seed(1)
    w = torch.rand((64, 10), generator=g)
    w[:, 3] = 0.0
    w[:, 8:] = 0.0
    u = torch.rand(64, generator=g, dtype=torch.float64)
    u[0], u[1] = 0.0, 1.0 - 2**-53  # the ends of [0, 1)
    j, total = _inverse_cdf(w, u, block=4)
    cdf = w.double().cumsum(-1)
    ref = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1).clamp(max=7)
    assert torch.equal(j, ref) and (w.gather(1, j[:, None]) > 0).all()
    assert torch.allclose(total.squeeze(1), cdf[:, -1])


def test_a_vocabulary_of_one_block_draws_as_the_two_level_search():
    # V = 10 <= block: one cumulative sum; the same indices and totals as blocks of 4 and 3
    g = torch.Generator().manual_seed(2)
    w = torch.rand((256, 10), generator=g)
    w[:, 0] = 0.0
    w[:, 9] = 0.0
    u = torch.rand(256, generator=g, dtype=torch.float64)
    u[0], u[1] = 0.0, 1.0 - 2**-53
    one, total = _inverse_cdf(w, u, block=10)
    for block in (4, 3):
        j, t = _inverse_cdf(w, u, block=block)
        assert torch.equal(one, j)
        torch.testing.assert_close(total, t, rtol=1e-15, atol=0)
    assert torch.equal(one, _inverse_cdf(w, u, block=1024)[0])
    assert (w.gather(1, one[:, None]) > 0).all() and len(one.unique()) == 8


def test_stop_table_misses_no_stop(tiny_tokenizer):
    """The text tail is decoded only after candidate tokens; over random sequences, every step at
    which decoding every token's tail first finds a stop string has a candidate token."""
    tok = tiny_tokenizer
    engine = HFEngine(torch.nn.Linear(1, 1), tok)
    stops = ["</calc>", "4", "é", "ab"]
    table = engine._stop_table(stops, len(tok), "cpu")
    assert 0 < int(table.sum()) < len(tok)  # it does skip most tokens
    matcher = _StopMatcher(tok, stops)
    g = torch.Generator().manual_seed(0)
    pool = tok.encode("a b ab 4 44 </calc> é ée x </ calc> <calc>", add_special_tokens=False)
    hits = 0
    for _ in range(300):
        seq = (torch.randint(0, len(tok), (12,), generator=g).tolist() if _ % 2
               else [pool[i] for i in torch.randint(0, len(pool), (12,), generator=g)])
        for t in range(len(seq)):
            if matcher.match(seq[:t + 1]) is not None:
                hits += 1
                assert bool(table[seq[t]]), (seq[:t + 1], tok.decode(seq[:t + 1]))
                break
    assert hits > 50


class EchoEnv(Environment):
    """Turns end at "e"; each observation is a few tokens whose count depends on the turn, so the
    batch's rows are ragged and the cache must keep every episode's own slots."""

    stop_strings = ["e"]

    def reset(self, task):
        self.turn = 0
        return task.prompt

    def step(self, action):
        self.turn += 1
        return StepResult(observation=" ok" * (1 + (len(action) + self.turn) % 4), done=False)

    def score(self, completion, task):
        from rlvr.core.types import Score

        return Score(reward=0.0)


class Stateless:
    """The same engine without its session: every turn prefills the whole sequence."""

    def __init__(self, engine):
        self.engine = engine

    def generate(self, prompts, params):
        return self.engine.generate(prompts, params)


def count_fed_tokens(model):
    """Token ids fed to the model, prefill and decode steps alike (both embed their input)."""
    seen = []
    handle = model.get_input_embeddings().register_forward_pre_hook(
        lambda m, args: seen.append(int(args[0].numel())))
    return seen, handle


def test_kv_reuse_across_turns_changes_nothing(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    # turn by turn: the session keeps each episode's cache between calls (continuous turns, which
    # never leave the engine, are compared with this path in tests/test_continuous_turns.py)
    cfg = RolloutConfig(max_turns=6, max_new_tokens=10, max_total_tokens=40, temperature=1.0,
                        continuous_turns=False)
    tasks = [Task("What is 2+3?", "5", id="a"), Task("Where was the author born?", "x", id="b")]
    runs = {}
    for name in ("reuse", "fresh"):
        engine = HFEngine(tiny_model, tok)
        seen, handle = count_fed_tokens(tiny_model)
        try:
            runs[name] = (collect(engine if name == "reuse" else Stateless(engine), tok, EchoEnv,
                                  tasks, samples_per_prompt=3, cfg=cfg, seed=4), sum(seen))
        finally:
            handle.remove()
    (a, fed_a), (b, fed_b) = runs["reuse"], runs["fresh"]
    assert sum(len(t.turns) for t in a) > len(a) + 2  # the test really runs several turns
    assert any(t.finish_reason == "max_total_tokens" for t in a)  # and cuts some (cache cropped)
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids and x.loss_mask == y.loss_mask
        assert x.turns == y.turns and x.finish_reason == y.finish_reason
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)
    assert fed_a < fed_b  # observations were prefilled alone, not with everything before them
    # and the reused cache gives the learner's logprobs
    batch = collate(a, tok.pad_token_id)
    lp, _ = token_logprobs(tiny_model, batch, 1.0, with_entropy=False)
    m = batch.loss_mask > 0
    assert torch.allclose(lp[m], batch.logprobs[m], atol=1e-4)


def test_generation_raises_no_deprecation(tiny_model, tiny_tokenizer, caplog, recwarn):
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40). Its
    notices are Python warnings from the forward's argument check and logger lines from the
    output's properties; the engine must trigger neither."""
    logging.Logger.warning_once.cache_clear()  # the logger notice is printed once per process
    engine = HFEngine(tiny_model, tiny_tokenizer)
    session = engine.session()
    params = SamplingParams(max_new_tokens=6, seed=1)
    p = tiny_tokenizer.encode("What is")
    with caplog.at_level(logging.WARNING):
        [o] = session.generate(["k"], [p], params)
        session.generate(["k"], [p + o.token_ids + tiny_tokenizer.encode(" ok")], params)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))]


# -- token_logprobs --------------------------------------------------------------------------

def reference_token_logprobs(model, batch, temperature):
    """The full computation: logits at every position, full log-softmax, entropy under grad."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    logits = logits / temperature
    logp = torch.log_softmax(logits, -1)
    lp = logp.gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    ent = -(logp.exp() * logp).sum(-1)
    zero = lp.new_zeros((lp.shape[0], 1))
    return torch.cat([zero, lp], 1), torch.cat([zero, ent], 1)


def ragged_batch(tok):
    trajs = []
    for text, n in [("What is 2+3? It is", 5), ("Name a colour: red, green", 3), ("one two three four five six seven", 6)]:
        ids = tok.encode(text)
        t = Trajectory.from_prompt(ids[:-n], group_id="g", task_id=text)
        t.append_sampled(ids[-n:], [0.0] * n)
        trajs.append(t)
    return collate(trajs, tok.pad_token_id)


@pytest.mark.parametrize("entropy_grad", [True, False])
def test_token_logprobs_completion_positions_equal_the_full_computation(tiny_model, tiny_tokenizer,
                                                                        entropy_grad):
    batch = ragged_batch(tiny_tokenizer)
    start = int(batch.prompt_lens.min())
    assert start > 1  # there are prompt positions to skip
    lp, ent = token_logprobs(tiny_model, batch, 0.7, entropy_grad=entropy_grad)
    ref_lp, ref_ent = reference_token_logprobs(tiny_model, batch, 0.7)
    assert lp.shape == ref_lp.shape == batch.input_ids.shape
    assert torch.allclose(lp[:, start:], ref_lp[:, start:], atol=1e-5)
    assert torch.allclose(ent[:, start:], ref_ent[:, start:], atol=1e-5)
    assert (lp[:, :start] == 0).all() and (ent[:, :start] == 0).all()
    assert ent.requires_grad == entropy_grad
    # the same gradient through the loss tokens
    m = batch.loss_mask
    g = torch.autograd.grad((lp * m).sum(), [p for p in tiny_model.parameters()][-1])[0]
    ref_g = torch.autograd.grad((ref_lp * m).sum(), [p for p in tiny_model.parameters()][-1])[0]
    assert torch.allclose(g, ref_g, atol=1e-5)


def test_token_logprobs_cover_every_loss_position(tiny_model, tiny_tokenizer):
    # a learner that trains on prompt tokens (loss_mask before prompt_len) still gets them
    batch = ragged_batch(tiny_tokenizer)
    batch.loss_mask[0, 2] = 1.0
    lp, _ = token_logprobs(tiny_model, batch, 1.0, with_entropy=False)
    ref, _ = reference_token_logprobs(tiny_model, batch, 1.0)
    assert torch.allclose(lp[0, 2], ref[0, 2], atol=1e-5) and lp[0, 2] != 0
