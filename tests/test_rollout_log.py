"""Rollout logs: a real 2-step GRPO run writes, per step, every trajectory token-exact with its
mask, the engine's and the trainer's logprobs, advantages, reward parts and reasons, turns and tool
calls; seeded group sampling; torn files; the eval writer. ``tiny_run`` is shared with the viewer
tests (they import it)."""

import gzip
import json

import pytest
import torch

import rlvr
from rlvr.core.environment import Environment, StepResult
from rlvr.core.types import ToolCall, Trajectory
from rlvr.learners.dispatch import learner_for
from rlvr.rollout import log as rollout_log

from conftest import tiny_learner_config


@rlvr.environment("rollout_log_probe")
class ProbeEnv(Environment):
    """Every ``</search>`` turn gets an observation (an empty query is a tool error); ``</answer>``
    ends the episode. With the tool tags pushed up (see ``tiny_run``) a random tiny model makes
    multi-turn episodes with observation tokens, tool errors and several finish reasons."""

    stop_strings = ["</search>", "</answer>"]
    verifiers = {"qa_em": 1.0, "rollout_log_probe_len": 0.5}

    def step(self, action):
        if action.rstrip().endswith("</answer>"):
            return StepResult(done=True)
        q = action.rsplit("<search>", 1)[-1].replace("</search>", "").strip()
        call = ToolCall("search", q) if q else ToolCall("search", q, valid=False, error="empty query")
        return StepResult(observation="<information> Doc 1: Paris is in France </information>",
                          tool_call=call)


@rlvr.verifier("rollout_log_probe_len")
def probe_len(completion, answer, **info):
    """A reward that varies between samples of a group (the random policy never answers)."""
    n = len(completion)
    return rlvr.Score((n % 5) / 4, reason=f"{n} characters")


TASKS = [rlvr.Task("Where is Paris?", ["France"], id=f"probe:{i}") for i in range(4)]
_RUNS: dict = {}


def run_probe(out_dir, *, steps=2, rl=None, env_verifiers=None, rollout=None, **run):
    """A real GRPO run (tiny model, HF engine) on the probe environment in ``out_dir/grpo``, with
    ``rl`` and ``run`` settings on top; returns (its directory, the tokenizer)."""
    from rlvr.core.models import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=0)
    # push the tool tags up so turns end on them often (the hook sits in the model: engine and
    # trainer see the same distribution)
    bias = torch.zeros(len(tok))
    for t in ("</search>", "</answer>", "<search>"):
        bias[tok.convert_tokens_to_ids(t)] = 3.5
    model.lm_head.register_forward_hook(lambda m, i, o: o + bias.to(o.dtype))
    cfg = tiny_learner_config(out_dir, "grpo", prompts=2, steps=steps,
                              **{"old_logprobs": "recompute", **(rl or {})})
    cfg.env.name = "rollout_log_probe"
    cfg.env.verifiers = dict(env_verifiers or {})
    cfg.rollout.max_turns, cfg.rollout.max_new_tokens = 3, 8
    cfg.run.seed = 3
    for k, v in run.items():
        setattr(cfg.run, k, v)
    for k, v in (rollout or {}).items():
        setattr(cfg.rollout, k, v)
    learner_for("grpo")(cfg, model=model, tokenizer=tok, tasks=TASKS)
    return out_dir / "grpo", tok


@pytest.fixture
def tiny_run(tmp_path_factory):
    """(run directory, tokenizer) of one 2-step run, made once per test session."""
    if "run" not in _RUNS:
        _RUNS["run"] = run_probe(tmp_path_factory.mktemp("rollout_run"))
    return _RUNS["run"]


def test_a_grpo_run_logs_every_trajectory_of_every_step_token_exact(tiny_run):
    run_dir, tok = tiny_run
    logged = rollout_log.read_run(run_dir)
    assert sorted(logged) == [1, 2]
    for step, recs in logged.items():
        assert len(recs) == 4  # 2 prompts x 2 samples, under the default max of 64
        assert sorted(r["row"] for r in recs) == [0, 1, 2, 3]
        groups = {}
        for r in recs:
            groups.setdefault(r["group_id"], []).append(r)
            n = len(r["token_ids"])
            assert len(r["tokens"]) == len(r["loss_mask"]) == len(r["logprobs"]) == n
            assert len(r["trainer_logprobs"]) == len(r["advantages"]) == n
            assert r["loss_mask"][:r["prompt_len"]] == [0] * r["prompt_len"]
            # the segments tile the sequence and their text is the decoded span
            assert r["segments"][0]["kind"] == "prompt" and r["segments"][-1]["end"] == n
            for a, b in zip(r["segments"], r["segments"][1:]):
                assert a["end"] == b["start"]
            for seg in r["segments"]:
                ids = r["token_ids"][seg["start"]:seg["end"]]
                assert seg["text"] == tok.decode(ids, skip_special_tokens=False)
                want = {"prompt": None, "sampled": 1, "observation": 0}[seg["kind"]]
                if want is not None:
                    assert set(r["loss_mask"][seg["start"]:seg["end"]]) == {want}
            sampled = [i for i, m in enumerate(r["loss_mask"]) if m]
            # engine logprobs on sampled tokens only; the trainer's (recomputed) agree closely
            assert all(r["logprobs"][i] < 0 for i in sampled)
            assert all(r["logprobs"][i] == 0 for i in range(n) if i not in sampled)
            gap = max(abs(r["logprobs"][i] - r["trainer_logprobs"][i]) for i in sampled)
            assert gap < 1e-3
            # GRPO: one advantage over the sampled tokens, zero elsewhere
            assert [r["advantages"][i] for i in sampled] == pytest.approx([r["advantage"]] * len(sampled),
                                                                          abs=1e-5)
            assert all(r["advantages"][i] == 0 for i in range(n) if i not in sampled)
            assert set(r["reward_parts"]) == {"qa_em", "rollout_log_probe_len"}
            assert r["reward"] == pytest.approx(r["reward_parts"]["qa_em"] + 0.5 * r["reward_parts"]["rollout_log_probe_len"])
            assert r["finish_reason"] in ("done", "eos", "max_turns", "max_total_tokens", "max_new_tokens")
            assert len(r["tool_calls"]) == sum(s["kind"] == "observation" for s in r["segments"])
        for g in groups.values():  # group-normalised: a group's advantages sum to 0
            assert len(g) == 2 and sum(r["advantage"] for r in g) == pytest.approx(0.0, abs=1e-4)
    every = [r for recs in logged.values() for r in recs]
    # the bias makes real multi-turn episodes: observation tokens and tool calls are present
    assert any(s["kind"] == "observation" for r in every for s in r["segments"])
    assert all(set(r["reasons"]) == {"qa_em", "rollout_log_probe_len"} for r in every)
    assert any(r["advantage"] != 0 for r in every)  # the groups are not all flat


def test_pick_groups_keeps_whole_groups_seeded():
    trajs = [Trajectory([1], [0], [0.0], 1, group_id=f"g{i // 3}") for i in range(12)]  # 4 x 3
    a = rollout_log.pick_groups(trajs, 7, seed=1)
    assert a == rollout_log.pick_groups(trajs, 7, seed=1)
    assert len(a) == 6 and len({trajs[i].group_id for i in a}) == 2  # 2 whole groups fit in 7
    assert rollout_log.pick_groups(trajs, 2, seed=1) in ([0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11])
    assert rollout_log.pick_groups(trajs, 0, seed=1) == list(range(12))
    assert {tuple(rollout_log.pick_groups(trajs, 3, seed=s)) for s in range(20)} != {(0, 1, 2)}


def test_sampled_logging_every_other_step(tmp_path):
    run_dir, _ = run_probe(tmp_path, steps=2, log_rollouts_every=2, log_rollouts_max=2)
    logged = rollout_log.read_run(run_dir)
    assert list(logged) == [2] and len(logged[2]) == 2
    assert logged[2][0]["group_id"] == logged[2][1]["group_id"]


def test_segments_and_reasons_by_hand():
    assert rollout_log.segments([5, 6, 7, 8, 9, 10], [0, 0, 1, 1, 0, 1], 2) == [
        ("prompt", 0, 2), ("sampled", 2, 4), ("observation", 4, 5), ("sampled", 5, 6)]
    assert rollout_log.split_reasons("qa_em: no answer; qa_f1: f1 0.0; odd", ["qa_em", "qa_f1"]) == {
        "qa_em": "no answer", "qa_f1": "f1 0.0", "": "odd"}


def test_torn_file_ends_with_a_warning_and_bad_json_names_the_line(tmp_path, caplog):
    p = tmp_path / "rollouts" / "step_000001.jsonl.gz"
    rollout_log.write_records(p, [{"step": 1, "i": 0}, {"step": 1, "i": 1}])
    data = p.read_bytes()
    p.write_bytes(data[:-12])  # cut inside the gzip trailer / last block
    got = list(rollout_log.read_records(p))
    assert len(got) <= 2 and "ends early" in caplog.text
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl.gz:2"):
        list(rollout_log.read_records(bad))


def test_negative_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="run.log_rollouts_max"):
        rollout_log.check_settings(1, -1)


def test_eval_log_appends_batches_and_overwrite_starts_afresh(tmp_path, tiny_tokenizer):
    t = Trajectory.from_prompt(tiny_tokenizer.encode("Q: 1+1"), group_id="g", task_id="d:0")
    t.append_sampled([5, 6], [-0.5, -0.25])
    t.append_observation([7])
    w = rollout_log.EvalRolloutLog(tmp_path, tiny_tokenizer)
    w("nq", [], [t])
    w("hotpotqa", [], [t])
    recs = rollout_log.read_run(tmp_path)[None]
    assert [r["dataset"] for r in recs] == ["nq", "hotpotqa"]
    assert recs[0]["loss_mask"][-3:] == [1, 1, 0] and recs[0]["logprobs"][-3:] == [-0.5, -0.25, 0.0]
    assert recs[0]["advantages"] is None and recs[0]["trainer_logprobs"] is None
    rollout_log.EvalRolloutLog(tmp_path, tiny_tokenizer, overwrite=True)("nq", [], [t])
    assert len(rollout_log.read_run(tmp_path)[None]) == 1
    json.dumps(recs)  # plain JSON all the way down
