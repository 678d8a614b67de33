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
