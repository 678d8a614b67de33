"""The data model's invariants."""

import pytest

from rlvr.core.types import Score, Task, Trajectory


def test_appends_keep_lengths_and_masks():
    tr = Trajectory.from_prompt([1, 2, 3], group_id="g", task_id="t:0")
    tr.append_sampled([4, 5], [-0.5, -0.25])
    tr.append_observation([6, 7, 8])
    tr.append_sampled([9], [-1.0])
    assert tr.token_ids == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert tr.loss_mask == [0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert tr.logprobs == [0, 0, 0, -0.5, -0.25, 0, 0, 0, -1.0]
    assert tr.num_sampled == 3 and tr.completion_ids == [4, 5, 6, 7, 8, 9]


def test_invariants_checked_on_construction():
    with pytest.raises(ValueError, match="one length"):
        Trajectory([1, 2], [0], [0.0, 0.0], 1)
    with pytest.raises(ValueError, match="prompt tokens must have loss_mask 0"):
        Trajectory([1, 2], [1, 1], [0.0, 0.0], 1)
    with pytest.raises(ValueError, match="prompt_len"):
        Trajectory([1], [0], [0.0], 5)
    with pytest.raises(ValueError, match="finish_reason"):
        Trajectory([1], [0], [0.0], 1, finish_reason="bored")
    with pytest.raises(ValueError, match="2 sampled tokens but 1 logprobs"):
        Trajectory.from_prompt([1]).append_sampled([2, 3], [0.0])


def test_task_validation_names_the_task():
    with pytest.raises(ValueError, match="nq:3.*message 0"):
        Task([{"content": "hi"}], "x", id="nq:3")
    with pytest.raises(TypeError, match="nq:4"):
        Task(42, "x", id="nq:4")
    assert Task([{"role": "user", "content": "hi"}], "x").prompt[0]["role"] == "user"


def test_score_to_dict():
    assert Score(1.0, True, {"em": 1.0}, "ok").to_dict() == {
        "reward": 1.0, "correct": True, "parts": {"em": 1.0}, "reason": "ok"}
