"""The math environment: GSM8K / MATH rows, \\boxed{} answers through the episode loop, the
bundled tiny config through ``rlvr train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlvr.core.config import EnvConfig, RolloutConfig
from rlvr.rollout.episodes import collect, make_env_factory
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task

GSM8K = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                     "many clips in May. How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                   "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"}
MATH = {"problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?",
        "solution": "Adding, $\\frac{1}{4} + \\frac{1}{4} = \\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
        "level": "Level 1", "type": "Prealgebra"}


def _gsm8k_task() -> Task:
    from rlvr.data.tasks import row_to_task

    return row_to_task(GSM8K, "gsm8k:0", where="gsm8k row 0")


def _math_task() -> Task:
    # what the loader would make of a MATH row once 'problem' is a prompt field: the rest in info
    return Task(MATH["problem"], None, {k: v for k, v in MATH.items() if k != "problem"}, id="math:0")


def test_registered_as_math():
    from rlvr.environments.math import MathEnv
    from rlvr.core.registry import ENVIRONMENTS

    assert ENVIRONMENTS.get("math") is MathEnv


def test_reference_answers_of_each_row_layout():
    from rlvr.environments.math import reference_answer

    assert reference_answer(_gsm8k_task()) == "72"  # the number after ####, not the worked text
    assert reference_answer(_math_task()) == "\\frac{1}{2}"  # the last \boxed{} of the solution
    # MATH-500 carries its own answer column: it wins over the solution
    assert reference_answer(Task("p", "\\frac12", {"solution": "\\boxed{9}"}, id="m5")) == "\\frac12"
    assert reference_answer(Task("p", ["3", "three"], id="l")) == ["3", "three"]
    assert reference_answer(Task("p", "1,234", id="n")) == "1,234"


def test_prompt_is_chat_with_the_boxed_system_prompt():
    from rlvr.environments.math import DEFAULT_SYSTEM_PROMPT, MathEnv

    env = MathEnv()
    assert env.reset(_gsm8k_task()) == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                        {"role": "user", "content": GSM8K["question"]}]
    assert "\\boxed{}" in DEFAULT_SYSTEM_PROMPT
    own = MathEnv(system_prompt="Answer inside <answer></answer>.")
    assert own.reset(_gsm8k_task())[0]["content"] == "Answer inside <answer></answer>."
    assert MathEnv(system_prompt=None).reset(_gsm8k_task()) == GSM8K["question"]  # plain text
    with pytest.raises(ValueError, match="task none:0: no reference answer"):
        env.reset(Task("p", None, {}, id="none:0"))


def test_gsm8k_and_math_rewards_through_the_episode_loop(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token
    replies = {"boxed": "48 + 24 = 72, so \\boxed{72}", "tagged": "<answer> 72 </answer>",
               "wrong": "I think \\boxed{71}", "none": "about seventy"}
    cfg = RolloutConfig(max_turns=1, max_new_tokens=64, max_total_tokens=512)
    factory = make_env_factory(EnvConfig(name="math"))
    got = {}
    for name, reply in replies.items():
        engine = ScriptedEngine(tiny_tokenizer, lambda ctx, r=reply: r + eos)
        [t] = collect(engine, tiny_tokenizer, factory, [_gsm8k_task()], samples_per_prompt=1, cfg=cfg)
        assert t.finish_reason == "eos" and t.error is None
        got[name] = (t.reward, t.correct)
    assert got == {"boxed": (1.0, True), "tagged": (1.0, True), "wrong": (0.0, False),
                   "none": (0.0, False)}
    # MATH: an equivalent form is found by math-verify, not by text ("0.5" vs "\frac{1}{2}")
    engine = ScriptedEngine(tiny_tokenizer, lambda ctx: "so \\boxed{0.5}" + eos)
    [t] = collect(engine, tiny_tokenizer, factory, [_math_task()], samples_per_prompt=1, cfg=cfg)
    assert t.reward == 1.0 and t.correct is True


def test_format_weight_rewards_a_stated_answer():
    from rlvr.environments.math import MathEnv

    env = MathEnv(format_weight=0.5)
    task = _gsm8k_task()
    # right and boxed: 1 + 0.5·1; wrong but boxed: 0 + 0.5·1; nothing stated: 0 + 0.5·0
    assert env.score("\\boxed{72}", task).reward == 1.5
    wrong = env.score("\\boxed{71}", task)
    assert wrong.reward == 0.5 and wrong.correct is False and wrong.parts == {"math": 0.0, "format": 1.0}
    assert env.score("seventy-two", task).reward == 0.0
    assert MathEnv().score("\\boxed{71}", task).parts == {"math": 0.0}  # off by default
    with pytest.raises(ValueError, match="format_weight must be >= 0"):
        MathEnv(format_weight=-1)
    with pytest.raises(ValueError, match=r"setting 'format_weight' must be float, got str"):
        make_env_factory(EnvConfig(name="math", settings={"format_weight": "high"}))


def test_rlvr_train_grpo_math(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "rlvr", "train", "grpo_math", "--run.steps", "2",
                          "--output-dir", str(out), "--run.progress", "false"],
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # every episode was scored by both parts of the reward, none failed
        assert "reward/math" in r and "reward/format" in r and r["rollout/errors"] == 0.0
    assert (out / "report.json").exists()
    assert "name: math" in (out / "config.yaml").read_text()
