"""Environment batch metrics: ``Environment.batch_metrics(trajectories)`` is merged, under
``env/``, into the learners' per-step metrics; the search environment reports searches per
trajectory, the valid-action share and the answered share through it."""

import json

import pytest

from rlvr.core.config import TrainConfig
from rlvr.core.environment import Environment
from rlvr.core.types import Trajectory
from rlvr.environments.search import SearchEnv, search_metrics
from rlvr.learners.dispatch import learner_for
from rlvr.learners.metrics import environment_metrics


def _traj(**info):
    t = Trajectory.from_prompt([1, 2])
    t.info.update(info)
    return t


def test_batch_metrics_are_prefixed_and_checked():
    class Counting(Environment):
        @classmethod
        def batch_metrics(cls, trajectories):
            # mean of info["calls"]: (1 + 3) / 2 = 2.0; a key that already has the prefix keeps it
            return {"calls": sum(t.info["calls"] for t in trajectories) / len(trajectories),
                    "env/n": len(trajectories)}

    class Broken(Environment):
        @classmethod
        def batch_metrics(cls, trajectories):
            return {"calls": "many"}

    trajs = [_traj(calls=1), _traj(calls=3)]
    assert environment_metrics(Counting, trajs) == {"env/calls": 2.0, "env/n": 2.0}
    assert environment_metrics(Environment, trajs) == {}  # the default adds nothing
    assert environment_metrics(object, trajs) == {}  # a plugin class without the method
    with pytest.raises(TypeError, match=r"Broken.batch_metrics: value of 'calls' must be a number"):
        environment_metrics(Broken, trajs)


def test_search_env_batch_metrics_are_search_metrics():
    # 2 actions / 1 search / answered, and 3 actions / 0 searches / 3 invalid / no answer:
    # searches (1 + 0) / 2 = 0.5, valid (5 - 3) / 5 = 0.4, answered 1 / 2 = 0.5
    trajs = [_traj(actions=2.0, searches=1.0, invalid_actions=0.0, retrieval_errors=0.0, answered=1.0),
             _traj(actions=3.0, searches=0.0, invalid_actions=3.0, retrieval_errors=0.0, answered=0.0)]
    want = {"env/searches": 0.5, "env/valid_action_ratio": 0.4, "env/answered": 0.5,
            "env/retrieval_errors": 0.0}
    assert SearchEnv.batch_metrics(trajs) == search_metrics(trajs) == pytest.approx(want)
    assert environment_metrics(SearchEnv, trajs) == pytest.approx(want)


def policy(context: str) -> str:
    """France questions: search, then answer from the passage. Japan questions: an action with a
    closing tag but no <search> (invalid) on every turn, never an answer."""
    after = context.split("Question:")[-1]
    if "Japan" in after:
        return "I do not know</search>"
    if "<information>" not in after:
        return "<think>I need to look it up.</think><search> capital of france </search>"
    return "<think>Found it.</think><answer> Paris </answer>"


def test_grpo_on_the_search_env_logs_env_metrics(tmp_path, tiny_tokenizer, monkeypatch):
    pytest.importorskip("rlvr.verifiers.qa")
    pytest.importorskip("bm25s")
    import rlvr.learners.common
    from rlvr.core.models import build_tiny_model
    from rlvr.core.types import Task
    from rlvr.retrieval.bm25 import BM25Index
    from rlvr.retrieval.corpus import Passage
    from rlvr.testing import ScriptedEngine

    index_dir = BM25Index.build(
        [Passage.from_contents("d1", '"Paris"\nParis is the capital of France.'),
         Passage.from_contents("d2", '"Tokyo"\nTokyo is the capital of Japan.')],
        workdir=tmp_path / "work").save(tmp_path / "index")
    # the learner's engine samples from the scripted policy; training still runs the tiny model
    monkeypatch.setattr(rlvr.learners.common, "HFEngine",
                        lambda model, tokenizer, **kw: ScriptedEngine(tokenizer, policy))
    cfg = TrainConfig(algorithm="grpo")
    cfg.env.name, cfg.env.settings = "search", {"index_dir": str(index_dir), "topk": 1}
    cfg.run.output_dir, cfg.run.steps = str(tmp_path / "run"), 2
    cfg.rollout.weight_sync_check = False  # the scripted engine is deliberately not the policy
    cfg.run.progress, cfg.run.device = False, "cpu"
    cfg.rl.prompts_per_step, cfg.rollout.samples_per_prompt = 2, 2
    cfg.rollout.max_turns, cfg.rollout.max_new_tokens = 3, 64
    cfg.rollout.max_total_tokens, cfg.rollout.max_obs_tokens = 1024, 256
    cfg.optim.micro_batch_size = 4
    tasks = [Task("What is the capital of France", ["Paris"], id="q:0"),
             Task("What is the capital of Japan?", ["Tokyo"], id="q:1")]
    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    learner_for("grpo")(cfg.validate(), model=model, tokenizer=tiny_tokenizer, tasks=tasks)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:  # each step: 2 France and 2 Japan episodes
        # France: search + answer (2 actions, 1 search, answered); Japan: 3 invalid actions
        # (max_turns = 3), no search, no answer.
        # searches (1 + 1 + 0 + 0) / 4 = 0.5; valid (10 - 6) / 10 = 0.4; answered 2 / 4 = 0.5
        assert row["env/searches"] == pytest.approx(0.5)
        assert row["env/valid_action_ratio"] == pytest.approx(0.4)
        assert row["env/answered"] == pytest.approx(0.5)
        assert row["env/retrieval_errors"] == 0.0
        assert row["reward/mean"] == pytest.approx(0.5)  # France right (1), Japan unanswered (0)
