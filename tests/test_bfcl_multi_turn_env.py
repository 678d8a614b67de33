"""The bfcl_multi_turn environment: BFCL's ground truth played turn by turn passes BFCL's checks,
a model that stops calling fails, user and tool turns are template deltas with loss_mask 0, and
``rlvr eval --env bfcl --data multi_turn_base`` reports its accuracy."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys

import pytest

from rlvr.core.config import RolloutConfig  # noqa: E402
from rlvr.core.models import build_tiny_tokenizer  # noqa: E402
from rlvr.environments.bfcl_executor import World, load_entries, parse_call  # noqa: E402
from rlvr.environments.bfcl_multi_turn import BfclMultiTurnEnv, tasks_from_entries  # noqa: E402
from rlvr.environments.chat_delta import ChatRenderer  # noqa: E402
from rlvr.rollout.episodes import collect  # noqa: E402
from rlvr.testing import ScriptedEngine  # noqa: E402

if importlib.util.find_spec("bfcl_eval") is None:
    pytest.skip("bfcl_eval is not installed (pip install --no-deps bfcl-eval)",
                allow_module_level=True)


EOT = "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def entries():
    return load_entries(limit=2)


def _user(content: str) -> str:
    return f"<|im_start|>user\n{content}{EOT}"


def _hermes_turn(entry: dict, calls: list[str]) -> str:
    """A turn's ground-truth calls in the tiny model's format, positional arguments by name."""
    methods = World(entry).methods
    out = []
    for c in calls:
        name, args, kwargs = parse_call(c)
        bound = inspect.signature(methods[name]).bind(*args, **kwargs).arguments
        out.append(f"<tool_call>{json.dumps({'name': name, 'arguments': dict(bound)})}</tool_call>")
    return "".join(out)


def ground_truth_policy(entries: list[dict]):
    """Each user turn: all of its ground-truth calls in one step, then a plain answer."""
    def policy(ctx: str) -> str:
        entry = next(e for e in entries if _user(e["question"][0][0]["content"]) in ctx)
        shown = [q[0]["content"] for q in entry["question"] if _user(q[0]["content"]) in ctx]
        since = ctx[ctx.rindex(_user(shown[-1])):]
        if "<tool_call>" in since or not entry["ground_truth"][len(shown) - 1]:
            return "Done." + EOT
        return _hermes_turn(entry, entry["ground_truth"][len(shown) - 1]) + EOT
    return policy


def _collect(tok, entries, policy, max_turns=200):
    envs: list[BfclMultiTurnEnv] = []

    def factory():
        envs.append(BfclMultiTurnEnv())
        return envs[-1]

    cfg = RolloutConfig(samples_per_prompt=1, max_turns=max_turns, max_new_tokens=2000,
                        max_total_tokens=400_000, max_obs_tokens=100_000)
    trajs = collect(ScriptedEngine(tok, policy), tok, factory, tasks_from_entries(entries),
                    samples_per_prompt=1, cfg=cfg, greedy=True)
    return trajs, envs


def test_ground_truth_episode_passes_and_is_token_exact(tok, entries):
    trajs, envs = _collect(tok, entries, ground_truth_policy(entries))
    for traj, env, entry in zip(trajs, envs, entries):
        n = len(entry["question"])
        assert traj.error is None and traj.finish_reason == "done", traj.error
        assert traj.correct is True and traj.reward == 1.0, traj.info.get("score_reason")
        assert traj.reward_parts["turns_passed"] == n
        assert len(traj.turns) == 2 * n  # one step of calls and one answer per user turn
        assert [len(c) for c in env.turn_calls] == [len(g) for g in entry["ground_truth"]]
        # the whole conversation rendered at once is the trajectory, token for token
        r = ChatRenderer(tok, [t.schema for t in env.episode_tools.values()])
        full = r.render_ids(env.messages, add_generation_prompt=False)
        assert traj.token_ids == full[: len(traj.token_ids)]
        assert len(full) - len(traj.token_ids) <= 1  # ChatML's trailing new line
        roles = [m["role"] for m in env.messages]
        assert roles.count("user") == n and "tool" in roles
        # loss_mask: 1 on every sampled token, 0 on every tool and user message
        assert sum(traj.loss_mask) == traj.num_sampled
        for k, turn in enumerate(traj.turns):
            assert set(traj.loss_mask[turn.action_start:turn.action_end]) == {1}
            assert set(traj.loss_mask[turn.action_end:turn.observation_end]) <= {0}
            obs = tok.decode(traj.token_ids[turn.action_end:turn.observation_end],
                             skip_special_tokens=False)
            if k % 2 == 1 and k < len(traj.turns) - 1:  # an answer: the next user turn follows
                assert obs == (f"\n{_user(entry['question'][k // 2 + 1][0]['content'])}\n"
                               f"<|im_start|>assistant\n")
            elif k % 2 == 0:
                assert obs.startswith("\n<|im_start|>tool\n") and obs.endswith("assistant\n")


def test_a_model_that_stops_calling_fails(tok, entries):
    trajs, envs = _collect(tok, entries, lambda ctx: "I cannot help with that." + EOT)
    for traj, env, entry in zip(trajs, envs, entries):
        # every user turn is still asked, and answered without calls
        assert traj.finish_reason == "done" and len(traj.turns) == len(entry["question"])
        assert traj.correct is False and traj.reward == 0.0
        assert traj.info["score_reason"] == "turn 0: no function call"
        assert env.turn_calls == [[]] * len(entry["question"])


def test_dropping_the_last_call_of_a_turn_fails_the_state_check(tok, entries):
    good = ground_truth_policy(entries)
    entry = entries[0]

    def policy(ctx):
        out = good(ctx)
        last = _user(entry["question"][-1][0]["content"])
        if last in ctx and "<tool_call>" not in ctx[ctx.rindex(last):]:  # the last turn's calls
            return _hermes_turn(entry, entry["ground_truth"][-1][:-1]) + EOT
        return out

    traj = _collect(tok, entries[:1], policy)[0][0]
    assert traj.correct is False
    assert traj.info["score_reason"].startswith(f"turn {len(entry['question']) - 1}: ")


def test_bfcl_step_limit_forces_the_conversation_to_quit(tok, entries):
    # BFCL quits after more than MAXIMUM_STEP_LIMIT steps with calls in one user turn
    call = '<tool_call>{"name": "pwd", "arguments": {}}</tool_call>' + EOT
    trajs, envs = _collect(tok, entries[:1], lambda ctx: call)
    traj, env = trajs[0], envs[0]
    assert len(traj.turns) == BfclMultiTurnEnv.max_steps_per_turn + 1
    assert traj.finish_reason == "done" and env.forced_quit_turn == 0 and traj.info["forced_quit"]
    assert traj.correct is False
    assert traj.info["score_reason"].startswith("forced to quit after 20 steps in turn 0; 1 turns")


def test_a_task_without_its_bfcl_test_fails_naming_the_field(tok):
    from rlvr.core.types import Task

    env = BfclMultiTurnEnv()
    env.bind_tokenizer(tok)
    with pytest.raises(ValueError, match=r"info\['entry'\]"):
        env.reset(Task("hello", None, {}, id="x"))


def test_run_bfcl_reports_multi_turn_accuracy(tmp_path, monkeypatch, tok, entries):
    import argparse

    from rlvr.eval import bfcl as bfcl_eval

    monkeypatch.setattr(bfcl_eval, "load_policy", lambda *a, **k: (None, tok))
    monkeypatch.setattr(bfcl_eval, "make_engine",
                        lambda *a, **k: ScriptedEngine(tok, ground_truth_policy(entries)))
    args = argparse.Namespace(
        model="scripted", data="multi_turn_base", limit=2, index=None, retriever=None,
        output_dir=str(tmp_path), batch_size=2, max_new_tokens=2000, max_total_tokens=400_000,
        max_obs_tokens=100_000, device="cpu", dtype="float32", engine="hf", overwrite=False,
        no_progress=True)
    assert bfcl_eval.run_bfcl(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["categories"]["multi_turn_base"] == {"n": 2, "accuracy": 1.0, "errors": 0}
    assert report["overall"]["accuracy"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["turns_passed"] for r in rows] == [len(e["question"]) for e in entries]


def test_rlvr_eval_bfcl_multi_turn_with_the_tiny_model(tmp_path):
    # the function docs are ~13k tiny-tokenizer tokens: the default 4096-token budget would fail
    # every reset, so the budget is raised for the episodes to reach the model; batch size 1
    # keeps the CPU prefill unpadded
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "rlvr", "eval", "--env", "bfcl", "--model", "tiny", "--data",
           "multi_turn_base", "--limit", "2", "--output-dir", str(out), "--no-progress",
           "--max-new-tokens", "2", "--max-total-tokens", "20000", "--batch-size", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    m = report["categories"]["multi_turn_base"]
    assert m["n"] == 2 and m["accuracy"] == 0.0 and m["errors"] == 0  # random weights: no passes
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    # each episode reached the model and was scored by BFCL's checks (cut short: too few turns)
    assert all("turns of calls for" in r["reason"] for r in rows), [r["reason"] for r in rows]
