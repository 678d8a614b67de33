"""The code environments through the real episode loop, with a scripted policy."""

from __future__ import annotations

import pytest

from rlvr.config import EnvConfig, RolloutConfig
from rlvr.environments.code import CodeEnv, CodeMultiTurnEnv
from rlvr.rollout import collect, make_env_factory
from rlvr.testing import ScriptedEngine
from rlvr.types import Task

DOUBLE = Task("Read n and print 2*n.", answer=[{"input": "2", "output": "4"},
                                                {"input": "5", "output": "10"}], id="double:0")
WRONG = "<run>```python\nprint(int(input()) + 2)\n```</run>"  # right for n = 2, wrong for n = 5
RIGHT = "<submit>```python\nprint(int(input()) * 2)\n```</submit>"


def _cfg(**kw) -> RolloutConfig:
    return RolloutConfig(**{"max_turns": 4, "max_new_tokens": 96, "max_total_tokens": 1024,
                            "max_obs_tokens": 256, **kw})


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_registered():
    from rlvr.registry import ENVIRONMENTS

    assert ENVIRONMENTS.get("code") is CodeEnv
    assert ENVIRONMENTS.get("code_multiturn") is CodeMultiTurnEnv


def test_single_turn_rewards_fraction(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token

    def policy(ctx: str) -> str:
        return "```python\nprint(int(input()) + 2)\n```" + eos

    engine = ScriptedEngine(tiny_tokenizer, policy)
    trajs = collect(engine, tiny_tokenizer, make_env_factory(EnvConfig(name="code")), [DOUBLE],
                    samples_per_prompt=2, cfg=_cfg())
    # n + 2 is right for n = 2 (4) and wrong for n = 5 (7 != 10): reward 1/2 for both samples
    assert [t.reward for t in trajs] == [0.5, 0.5]
    assert trajs[0].reward_parts == {"code": 0.5}
    assert trajs[0].finish_reason == "eos" and trajs[0].group_id == trajs[1].group_id


def test_multiturn_feedback_is_masked_and_retry_scores(tiny_tokenizer):
    def policy(ctx: str) -> str:
        return RIGHT if "</feedback>" in ctx else WRONG  # the system prompt names <feedback>

    engine = ScriptedEngine(tiny_tokenizer, policy)
    [t] = collect(engine, tiny_tokenizer, make_env_factory(EnvConfig(name="code_multiturn")),
                  [DOUBLE], samples_per_prompt=1, cfg=_cfg())
    assert t.finish_reason == "done" and t.reward == 1.0 and t.correct is True
    assert len(t.turns) == 2
    first = t.turns[0]
    obs = _decode(tiny_tokenizer, t.token_ids[first.action_end:first.observation_end])
    # the run's feedback: 1 of 2 cases passed, then the failing case's details
    assert obs.startswith("<feedback>1/2 tests passed") and "expected: '10'" in obs
    assert "got: '7\\n'" in obs
    assert set(t.loss_mask[first.action_end:first.observation_end]) == {0}  # never trained
    assert set(t.loss_mask[first.action_start:first.action_end]) == {1}
    assert [c.name for c in t.tool_calls] == ["run", "submit"]
    assert t.info["code_runs"] == 1.0 and t.info["failed_runs"] == 1.0
    assert t.info["last_run_pass_rate"] == 0.5


def test_multiturn_turn_budget_scores_last_run(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, lambda ctx: WRONG)
    factory = make_env_factory(EnvConfig(name="code_multiturn", settings={"max_attempts": 2}))
    [t] = collect(engine, tiny_tokenizer, factory, [DOUBLE], samples_per_prompt=1, cfg=_cfg())
    # two runs, then the budget ends the episode; the last run's code earns 1/2
    assert t.info["code_runs"] == 2.0 and t.finish_reason == "done"
    assert t.reward == 0.5


def test_multiturn_public_tests_used_for_feedback():
    env = CodeMultiTurnEnv()
    task = Task("p", answer=[{"input": "5", "output": "10"}],
                info={"public_tests": [{"input": "2", "output": "4"}]}, id="t:0")
    env.reset(task)
    res = env.step(WRONG)
    # the public case (2 → 4) passes; the hidden one (5 → 10) decides the reward
    assert res.observation.startswith("<feedback>1/1 tests passed")
    assert env.score("", task).reward == 0.0


def test_multiturn_garbage_actions_never_raise():
    env = CodeMultiTurnEnv()
    env.reset(DOUBLE)
    r = env.step("no code at all</run>")
    assert r.observation.startswith("<feedback>compile error: SyntaxError")
    assert env.step("<run></run>").observation == (
        "<feedback>no code found: put it in a ```python fenced block</feedback>")
    r = env.step("<run>```python\nwhile True: pass\n```</run>")
    assert r.observation.startswith("<feedback>")
    bad = CodeMultiTurnEnv()
    bad.reset(Task("p", answer=42, id="bad:0"))
    assert "could not run the tests" in bad.step(WRONG).observation


def test_unknown_setting_names_it():
    with pytest.raises(ValueError, match=r"unknown setting 'max_attemps'; valid settings: .*"
                                         r"max_attempts \(int\)"):
        CodeMultiTurnEnv(max_attemps=2)
