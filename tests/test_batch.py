import math

import pytest
import torch

from rlvr.core.types import Trajectory
from rlvr.learners.batch import collate, token_logprobs


def _traj(prompt, sampled, obs=(), more=(), reward=0.0):
    t = Trajectory.from_prompt(list(prompt))
    t.append_sampled(list(sampled), [-0.5] * len(sampled))
    if obs:
        t.append_observation(list(obs))
    if more:
        t.append_sampled(list(more), [-0.25] * len(more))
    t.reward = reward
    return t


def test_collate_pads_right_and_keeps_masks():
    a = _traj([5, 6], [7, 8], obs=[9], more=[10], reward=1.0)  # 6 tokens
    b = _traj([5], [7], reward=0.0)  # 2 tokens
    batch = collate([a, b], pad_token_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 10], [5, 7, 0, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]]
    assert batch.loss_mask.tolist() == [[0, 0, 1, 1, 0, 1], [0, 1, 0, 0, 0, 0]]
    assert batch.logprobs.tolist() == [[0, 0, -0.5, -0.5, 0, -0.25], [0, -0.5, 0, 0, 0, 0]]
    assert batch.advantages.tolist() == [[0] * 6, [0] * 6]  # the learner fills them in
    assert batch.rewards.tolist() == [1.0, 0.0]
    assert batch.num_tokens == 4
    # micro-batches are trimmed to their own longest row
    parts = batch.split(1)
    assert [p.input_ids.shape for p in parts] == [(1, 6), (1, 2)]


def test_token_logprobs_match_manual_and_ignore_padding(tiny_model):
    torch.manual_seed(0)
    a = _traj([5, 6], [7, 8], obs=[9], more=[10])
    b = _traj([5], [7])
    batch = collate([a, b], pad_token_id=0)
    with torch.no_grad():
        lp, ent = token_logprobs(tiny_model, batch, temperature=0.7)
        # manual: row a alone, no padding, token t from logits at t-1
        logits = tiny_model(input_ids=torch.tensor([a.token_ids])).logits[0].float() / 0.7
        want = [0.0] + [torch.log_softmax(logits[t - 1], -1)[a.token_ids[t]].item()
                        for t in range(1, len(a))]
        p = torch.softmax(logits[2], -1)
        want_ent = -(p * p.log()).sum().item()  # entropy of the distribution of token 3
        # row b alone: padding on the right must not change its logprobs
        logits_b = tiny_model(input_ids=torch.tensor([b.token_ids])).logits[0].float() / 0.7
        want_b = torch.log_softmax(logits_b[0], -1)[7].item()
    assert lp.shape == (2, 6) and ent.shape == (2, 6)
    assert lp[0].tolist() == pytest.approx(want, abs=1e-5)
    assert ent[0, 3].item() == pytest.approx(want_ent, abs=1e-5)
    assert lp[1, 1].item() == pytest.approx(want_b, abs=1e-5)
    assert lp[:, 0].tolist() == [0.0, 0.0]
    assert all(x <= 0 for x in lp.flatten().tolist())
    assert 0 < ent[0, 3].item() < math.log(tiny_model.config.vocab_size) + 1e-4


def test_only_scores_the_selected_tokens_as_the_whole_model_does(tiny_model, monkeypatch):
    from types import SimpleNamespace

    import rlvr.learners.batch as batch_mod
    from rlvr.core.models import plain_head

    a = _traj([5, 6], [7, 8], obs=[9, 11, 12], more=[10])  # 8 tokens, 3 sampled
    b = _traj([5], [7, 13], obs=[14])  # 4 tokens, 2 sampled
    batch = collate([a, b], pad_token_id=0)
    m = batch.loss_mask.bool()
    decoder, head = plain_head(tiny_model)  # the tiny Llama takes the selected-positions path
    rows = []  # (how the head ran, the positions it ran on); not a hook: a hooked head runs as a module
    forward, fused = head.forward, batch_mod.head_logprobs
    monkeypatch.setattr(head, "forward", lambda x: rows.append(("module", x.shape[:-1])) or forward(x))
    monkeypatch.setattr(batch_mod, "head_logprobs",  # a diagnostic entropy: the chunked head pass
                        lambda head, h, *a, **kw: rows.append(("chunked", h.shape[:-1])) or fused(head, h, *a, **kw))
    w = torch.linspace(-1, 1, batch.input_ids.numel()).view(batch.input_ids.shape)
    for entropy_grad in (True, False):
        out = {}
        for only in (None, batch.loss_mask):
            tiny_model.zero_grad(set_to_none=True)
            rows.clear()
            lp, ent = token_logprobs(tiny_model, batch, 0.7, entropy_grad=entropy_grad, only=only)
            loss = (lp * w * batch.loss_mask).sum() + (ent * batch.loss_mask).sum()
            loss.backward()
            out[only is None] = (lp.detach(), ent.detach(), rows[0],
                                 [p.grad.clone() for p in tiny_model.parameters()])
        (lp_all, ent_all, rows_all, g_all), (lp_sel, ent_sel, rows_sel, g_sel) = out[True], out[False]
        torch.testing.assert_close(lp_sel[m], lp_all[m], rtol=0, atol=1e-5)
        torch.testing.assert_close(ent_sel[m], ent_all[m], rtol=0, atol=1e-5)
        assert lp_sel[~m].abs().sum() == 0 and ent_sel[~m].abs().sum() == 0
        for x, y in zip(g_sel, g_all):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
        assert g_all[0].abs().sum() > 0
        # the head ran on the 5 sampled tokens' positions, not on 2 rows x 8 positions (b's
        # prompt is 1 token, so the whole-model path starts at column 1 and keeps all 8)
        assert rows_sel == ("module" if entropy_grad else "chunked", (5,))
        assert rows_all == ("module", (2, 8))
    # a model outside the known plain-head types keeps the whole-model path
    assert plain_head(SimpleNamespace(config=SimpleNamespace(model_type="gemma2"))) is None


def _grouped_batch():
    """Three prompts (3, 6 and 5 tokens) of 4, 3 and 1 samples, their rows interleaved; some
    samples multi-turn (an observation, then more sampled tokens), of different lengths."""
    prompts = {"a": [5, 6, 7], "b": [8, 9, 10, 11, 12, 13], "c": [14, 15, 16, 17, 18]}
    rows = []
    for i, g in enumerate("ababcaba"):
        n = 2 + i % 4
        rows.append(_traj(prompts[g], [20 + i + j for j in range(n)],
                          obs=[40, 41 + i] if i % 3 == 0 else (), more=[50 + i] if i % 3 == 0 else ()))
    return collate(rows, pad_token_id=0)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "llama_lora"])
def test_shared_prompts_give_the_whole_pass_logprobs_and_gradients(kind, tiny_model, tiny_tokenizer,
                                                                   monkeypatch):
    import rlvr.learners.batch as batch_mod
    from rlvr.core.models import build_tiny_model
    from tests.test_fast_decode import tiny

    if kind == "llama_lora":  # a PEFT model: the decoder is looked up through the wrapper
        peft = pytest.importorskip("peft")
        model = peft.get_peft_model(build_tiny_model(tiny_tokenizer), peft.LoraConfig(
            r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    else:
        model = tiny_model if kind == "llama" else tiny(kind, tiny_tokenizer)
    batch = _grouped_batch()
    first, inverse = batch_mod.shared_prompts(batch)
    groups = "ababcaba"  # the rows' prompts
    assert len(first) == 3 and all((inverse[i] == inverse[j]) == (groups[i] == groups[j])
                                   for i in range(8) for j in range(8))
    runs = []
    real = batch_mod.shared_prompt_hidden
    monkeypatch.setattr(batch_mod, "shared_prompt_hidden",
                        lambda *a: (runs.append(len(a[2])), real(*a))[1])
    w = torch.linspace(-1, 1, batch.input_ids.numel()).view(batch.input_ids.shape)
    out = []
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        lp, ent = token_logprobs(model, batch, 0.7, only=batch.loss_mask, share_prompts=share)
        ((lp * w).sum() + ent.sum()).backward()
        out.append((lp.detach(), ent.detach(), [p.grad.clone() for p in model.parameters()
                                                if p.grad is not None]))
    assert runs == [3]  # the shared pass ran, once, over the 3 distinct prompts
    (lp0, ent0, g0), (lp1, ent1, g1) = out
    assert lp0.abs().sum() > 0
    torch.testing.assert_close(lp1, lp0, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent1, ent0, rtol=0, atol=1e-5)
    for x, y in zip(g1, g0):  # (2.0e-6 seen on one element on an AVX-512 Xeon: summation order)
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_prompts_are_shared_only_where_it_saves(tiny_model, tiny_tokenizer, monkeypatch):
    import rlvr.learners.batch as batch_mod
    from rlvr.learners.runtime import activation_checkpointing
    from tests.test_fast_decode import tiny

    distinct = collate([_traj([5 + i, 6], [7, 8, 9]) for i in range(4)], pad_token_id=0)
    assert batch_mod.shared_prompts(distinct) is None  # nothing to share
    no_prompt = collate([_traj([], [7, 8, 9]), _traj([5, 6, 7, 8], [9]), _traj([5, 6, 7, 8], [10])], 0)
    assert batch_mod.shared_prompts(no_prompt) is None  # a row without a prompt: nothing kept
    runs, real = [], batch_mod.shared_prompt_hidden
    monkeypatch.setattr(batch_mod, "shared_prompt_hidden", lambda *a: (runs.append(1), real(*a))[1])
    windowed = tiny("mistral_window", tiny_tokenizer)  # a sliding window: the whole pass runs
    with torch.no_grad():
        token_logprobs(windowed, _grouped_batch(), only=_grouped_batch().loss_mask, share_prompts=True)
    assert runs == []
    # one shared 1-token prompt in rows of 12 tokens: 1 token saved of 24 (under a tenth)
    short = collate([_traj([5], list(range(20, 31))), _traj([5], list(range(40, 51)))], pad_token_id=0)
    assert batch_mod.shared_prompts(short) is None
    grouped = _grouped_batch()
    assert batch_mod.shared_prompts(grouped) is not None
    # activation checkpointing drops the cache the shared pass needs: the whole pass runs
    activation_checkpointing(tiny_model, True)
    try:
        assert batch_mod._checkpointed(tiny_model)
        with torch.no_grad():
            a, _ = token_logprobs(tiny_model, grouped, only=grouped.loss_mask, share_prompts=True)
            b, _ = token_logprobs(tiny_model, grouped, only=grouped.loss_mask, share_prompts=False)
        assert torch.equal(a, b)
    finally:
        activation_checkpointing(tiny_model, False)
