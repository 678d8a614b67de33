"""The scripted expert: token-exact demonstrations whose loss tokens hold no retrieved text."""

import random

import pytest

from rlvr.data.tasks import row_to_task
from rlvr.jobs.search_world.expert import ExpertConfig, demonstrate, expert_trajectories
from rlvr.jobs.search_world.world import WorldConfig, build_world

SMALL = WorldConfig(seed=5, num_people=40, num_cities=8, num_countries=3, num_orgs=5,
                    dev_people=5, test_people=5)


@pytest.fixture(scope="module")
def setup():
    from rlvr.environments.search import SearchEnv
    from rlvr.core.models import build_tiny_tokenizer
    from rlvr.retrieval.bm25 import BM25Index
    from rlvr.retrieval.corpus import Passage

    world = build_world(SMALL)
    tok = build_tiny_tokenizer(world.texts(), vocab_size=700)
    index = BM25Index.build([Passage.from_contents(p["id"], p["contents"]) for p in world.passages])
    tasks = [row_to_task(r, r["id"]) for r in world.splits["train"]]

    def factory():
        return SearchEnv(index=index, topk=2, template="Question: {question}\n", chat=False)

    return world, tok, tasks, factory


def _spans(traj, mask_value):
    return [t for t, m in zip(traj.token_ids[traj.prompt_len:], traj.loss_mask[traj.prompt_len:])
            if m == mask_value]


def _two_hop(tasks):
    return next(t for t in tasks if t.info["metadata"]["hops"] == 2)


def test_good_two_hop_demo_is_token_exact(setup):
    world, tok, tasks, factory = setup
    task = _two_hop(tasks)
    traj = demonstrate(world, task, factory(), tok, "good", random.Random(0))
    subject = task.info["metadata"]["subject"]
    city = world.person(subject).birthplace
    trained = tok.decode(_spans(traj, 1))
    # the loss tokens are exactly the expert's three turns, nothing retrieved
    assert trained == (f"<search> {subject} </search><search> {city} </search>"
                       f"<answer> {task.answer[0]} </answer>")
    observed = tok.decode(_spans(traj, 0))
    assert observed.count("<information>") == 2 and observed.count("</information>") == 2
    assert "was born in" in observed and "is a city in" in observed
    assert traj.reward == 1.0 and traj.correct is True
    assert traj.finish_reason == "done" and len(traj.turns) == 3
    assert [c.name for c in traj.tool_calls] == ["search", "search", "answer"]
    # the prompt is what the rollout would render, never trained
    assert tok.decode(traj.token_ids[:traj.prompt_len]) == f"Question: {task.prompt}\n"
    assert sum(traj.loss_mask[:traj.prompt_len]) == 0


def test_no_retrieved_token_is_trained_in_any_demo(setup):
    world, tok, tasks, factory = setup
    trajs = expert_trajectories(world, tasks, factory, tok, ExpertConfig(p_good=0.4, p_guess=0.3))
    assert len(trajs) == 2 * len(tasks)
    seen = {t.info["expert"] for t in trajs}
    assert seen == {"good", "guess", "bad"}
    for traj in trajs:
        traj.check()
        trained = tok.decode(_spans(traj, 1))
        for marker in ("<information>", "</information>", "Doc 1", "Title:", "was born in"):
            assert marker not in trained, (traj.info["expert"], trained)
        # every observation token sits in an observation span recorded by a turn
        obs_positions = {i for i, m in enumerate(traj.loss_mask) if m == 0 and i >= traj.prompt_len}
        spans = {i for turn in traj.turns for i in range(turn.action_end, turn.observation_end)}
        assert obs_positions == spans


def test_habits_differ_as_described(setup):
    world, tok, tasks, factory = setup
    trajs = expert_trajectories(world, tasks, factory, tok, ExpertConfig(p_good=0.4, p_guess=0.3))
    by = {b: [t for t in trajs if t.info["expert"] == b] for b in ("good", "guess", "bad")}
    assert all(t.reward == 1.0 for t in by["good"])
    assert all(t.info["searches"] == 0 for t in by["guess"])
    assert all(t.info["searches"] == 1 for t in by["bad"])
    # a guesser picks among 8 cities / 5 organisations / 3 countries, a bad searcher usually reads
    # someone else's passage: both are right far less often than the good habit's 100%
    for b in ("guess", "bad"):
        assert sum(t.reward for t in by[b]) / len(by[b]) < 0.6


def test_same_seed_same_demonstrations(setup):
    world, tok, tasks, factory = setup
    a = expert_trajectories(world, tasks[:20], factory, tok, ExpertConfig(seed=1))
    b = expert_trajectories(world, tasks[:20], factory, tok, ExpertConfig(seed=1))
    assert [t.token_ids for t in a] == [t.token_ids for t in b]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="p_good"):
        ExpertConfig(p_good=0.8, p_guess=0.5)
