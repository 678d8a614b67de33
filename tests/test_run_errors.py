"""Failing fast: errors counted by phase, a streak of all-error steps stopping the run with the most
common reason, and the deadlines that turn a hanging verifier or a dead retriever into a recorded
error instead of an endless wait."""

import socket
import threading
import time

import pytest

from rlvr.core.types import Trajectory
from rlvr.learners.dispatch import learner_for
from rlvr.rollout.errors import check_error_streak, error_metrics, error_of


def traj(task="t:0", error=None, **info):
    t = Trajectory([1, 2], [0, 1], [0.0, -1.0], 1, task_id=task, error=error)
    t.info.update(info)
    return t


def test_phases_of_failed_episodes():
    ok = traj(score_reason="qa_em: no <answer>...</answer> in the response")
    assert error_of(ok) is None
    assert error_of(traj(error="reset failed: ValueError: bad"))[0] == "reset"
    assert error_of(traj(error="engine failed: RuntimeError: OOM"))[0] == "engine"
    assert error_of(traj(error="step failed: RetrievalError: http://x: timed out after 5s"))[0] == "step"
    assert error_of(traj(score_error="KeyError: 'answer'"))[0] == "score"
    timed = traj(score_reason="qa_em: verifier timed out after 10s (worker killed)")
    assert error_of(timed) == ("verifier", "qa_em: verifier timed out after 10s (worker killed)")
    m = error_metrics([ok, timed, timed, traj(error="engine failed: x")])
    assert m == {"errors/reset": 0, "errors/engine": 1, "errors/step": 0, "errors/score": 0,
                 "errors/verifier": 2, "errors/retrieval": 0}
    # a search that failed among ones that worked is not an episode failure; all failed is
    dead = traj()
    dead.info.update(searches=2.0, retrieval_errors=2.0)
    half = traj()
    half.info.update(searches=2.0, retrieval_errors=1.0)
    assert error_of(dead)[0] == "retrieval" and error_of(half) is None


def test_a_streak_of_all_error_steps_stops_with_the_most_common_reason():
    state = {}
    timeout = "math: verifier timed out after 10s (worker killed)"
    bad = [traj("m:1", score_reason=timeout), traj("m:2", score_reason=timeout),
           traj("m:3", score_error="TypeError: x")]
    check_error_streak(state, 1, bad, max_steps=2)
    # one real verdict resets the streak
    check_error_streak(state, 2, bad + [traj(score_reason="math: wrong")], max_steps=2)
    check_error_streak(state, 3, bad, max_steps=2)
    with pytest.raises(RuntimeError) as e:
        check_error_streak(state, 4, bad, max_steps=2)
    msg = str(e.value)
    # 4 of the 6 errors of steps 3-4 are the timeout; the message names phase, task and deadline
    assert "step 4" in msg and "last 2 steps" in msg and "4 of 6" in msg
    assert "'verifier'" in msg and "task m:1" in msg and "timed out after 10s" in msg
    check_error_streak({}, 1, bad, max_steps=0)  # 0 = never stop
    with pytest.raises(ValueError, match="run.max_error_steps"):
        check_error_streak({}, 1, bad, max_steps=-1)


def _hangs(completion, answer, **info):
    time.sleep(60)


def test_a_hanging_verifier_is_an_error_at_its_deadline():
    from rlvr.core.scoring import VerifierPool

    pool = VerifierPool(1)
    try:
        t0 = time.monotonic()
        [score] = pool.map([("fn", ("hangs", _hangs), "x", "y", {})], timeout_s=0.5)
        assert time.monotonic() - t0 < 10
    finally:
        pool.close()
    t = traj(score_reason=f"hangs: {score.reason}")
    assert score.reward == 0 and error_of(t)[0] == "verifier" and "0.5s" in score.reason


def test_a_retriever_that_accepts_and_never_answers_is_an_error_at_its_deadline():
    from rlvr.retrieval.client import RetrievalClient, RetrievalError

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # accepts connections (the kernel does) and never answers
    port = srv.getsockname()[1]
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    try:
        client = RetrievalClient(f"http://127.0.0.1:{port}/retrieve", timeout_s=0.5, retries=0)
        t0 = time.monotonic()
        with pytest.raises(RetrievalError, match=r"127.0.0.1:%d.*timed out after 0.5s" % port):
            client.search(["who"], k=1)
        assert time.monotonic() - t0 < 10
        client.close()
    finally:
        srv.close()
    # a dead one (nothing listens): refused at once, naming the URL
    client = RetrievalClient(f"http://127.0.0.1:{port}/retrieve", timeout_s=0.5, retries=0)
    with pytest.raises(RetrievalError, match=str(port)):
        client.search(["who"], k=1)
    client.close()


def test_a_run_whose_verifier_always_fails_stops_after_max_error_steps(tmp_path):
    import json

    from test_rollout_log import run_probe

    import rlvr

    @rlvr.verifier("run_errors_broken")
    def broken(completion, answer, **info):
        raise ConnectionError("grader service unreachable")

    with pytest.raises(RuntimeError, match=r"step 2: every reward of the last 2 steps.*'verifier'"
                                           r".*grader service unreachable"):
        run_probe(tmp_path, steps=4, max_error_steps=2, env_verifiers={"run_errors_broken": 1.0})
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and rows[0]["errors/verifier"] == 4


def test_a_verifier_that_hangs_is_cut_at_its_deadline_and_stops_the_run(tmp_path):
    """A plugin verifier that never returns: each episode's scoring is given up after
    ``rollout.score_timeout_s``, recorded with the phase, the task and the deadline, and two such
    steps in a row stop the run saying so, instead of a run that waits forever."""
    import threading

    from test_rollout_log import run_probe

    import rlvr

    release = threading.Event()

    @rlvr.verifier("run_errors_hangs")
    def hangs(completion, answer, **info):
        release.wait(60)  # "forever" for this test; released at the end so no thread lingers
        return 0.0

    try:
        with pytest.raises(RuntimeError, match=r"step 2: every reward of the last 2 steps.*'score'.*"
                                               r"still being scored after rollout.score_timeout_s = 0.2 s"):
            run_probe(tmp_path, steps=4, max_error_steps=2, env_verifiers={"run_errors_hangs": 1.0},
                      rollout={"score_timeout_s": 0.2})
    finally:
        release.set()


def test_a_retriever_that_dies_mid_run_stops_it_naming_the_phase(tmp_path, tiny_tokenizer, monkeypatch):
    """The retriever answers step 1, then refuses every connection: each search becomes an error
    observation (the episode goes on), and after ``run.max_error_steps`` steps in which every
    episode's every search failed, the run stops naming the retrieval phase and the server."""
    import json

    import rlvr.learners.common
    from rlvr.core.config import TrainConfig
    from rlvr.core.models import build_tiny_model
    from rlvr.core.types import Task
    from rlvr.retrieval.base import Hit, RetrievalError
    from rlvr.retrieval.corpus import Passage
    from rlvr.testing import ScriptedEngine

    class DyingIndex:
        calls = 0

        def search(self, queries, k):
            DyingIndex.calls += 1
            if DyingIndex.calls > 1:
                raise RetrievalError("server at http://127.0.0.1:8000/retrieve refused the connection")
            return [[Hit(Passage.from_contents("d1", '"Paris"\nParis is the capital.'), 1.0)]
                    for _ in queries]

    def policy(context):
        if "<information>" not in context.split("Question:")[-1]:
            return "<think>look it up</think><search> capital of france </search>"
        return "<answer> Paris </answer>"

    monkeypatch.setattr(rlvr.learners.common, "HFEngine", lambda model, tokenizer, **kw: ScriptedEngine(tokenizer, policy))
    cfg = TrainConfig(algorithm="grpo")
    import rlvr.environments.search as search_mod

    monkeypatch.setitem(search_mod._INDEXES, str((tmp_path / "idx").resolve()), DyingIndex())
    cfg.env.name, cfg.env.settings = "search", {"index_dir": str(tmp_path / "idx"), "topk": 1}
    cfg.run.output_dir, cfg.run.steps, cfg.run.max_error_steps = str(tmp_path / "run"), 6, 2
    cfg.rollout.weight_sync_check = False  # the scripted engine is deliberately not the policy
    cfg.run.progress, cfg.run.device = False, "cpu"
    cfg.rl.prompts_per_step, cfg.rollout.samples_per_prompt = 1, 2
    cfg.rollout.max_turns, cfg.rollout.max_new_tokens, cfg.rollout.max_total_tokens = 2, 32, 512
    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    with pytest.raises(RuntimeError, match=r"step 3: every reward of the last 2 steps.*'retrieval'.*"
                                           r"refused the connection"):
        learner_for("grpo")(cfg.validate(), model=model, tokenizer=tiny_tokenizer,
                               tasks=[Task("What is the capital of France?", ["Paris"], id="q:0")])
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["errors/retrieval"] == 0 and rows[1]["errors/retrieval"] == 2
