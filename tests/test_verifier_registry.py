"""The verifier registry, composition and the process pool (deadline, crash, order)."""

import os
import time

import pytest

import rlvr
from rlvr.core.registry import VERIFIERS, Registry, describe
from rlvr.core.scoring import VerifierPool, combine, verify, verify_batch


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed afterwards, so the global registry stays clean."""
    names = []
    yield names
    for n in names:
        VERIFIERS._items.pop(n, None)


def _sleepy(completion, answer, **info):
    """Sleeps for float(completion) seconds, then matches."""
    time.sleep(float(completion))
    return rlvr.Score(1.0, True)


def _crashy(completion, answer, **info):
    """Kills its own process when asked to."""
    if completion == "die":
        os._exit(3)
    return rlvr.Score(1.0, True, reason="alive")


def _raisy(completion, answer, **info):
    raise RuntimeError("boom")


def test_decorator_registers_and_describes(scratch_names):
    @rlvr.verifier("_test_yes")
    def yes(completion, answer, **info):
        """Reward 1 when the completion says yes.

        More text that listings do not show."""
        ok = "yes" in completion
        return rlvr.Score(float(ok), ok)

    scratch_names.append("_test_yes")
    assert VERIFIERS.get("_test_yes") is yes
    assert describe(yes) == "Reward 1 when the completion says yes."
    assert verify("_test_yes", "yes!", None).reward == 1.0


def test_duplicate_names_raise(scratch_names):
    rlvr.verifier("_test_dup")(_sleepy)
    scratch_names.append("_test_dup")
    with pytest.raises(ValueError, match="already registered"):
        rlvr.verifier("_test_dup")(_crashy)
    with pytest.raises(ValueError, match="already registered"):  # a built-in name too
        rlvr.verifier("qa_em")(_crashy)


def test_unknown_name_lists_known():
    with pytest.raises(KeyError) as e:
        verify("no_such_verifier", "x", "y")
    msg = str(e.value)
    for name in ("math", "qa_em", "qa_f1", "qa_cover_em", "format_r1", "format_search",
                 "language", "tool_call", "tool_call_em"):
        assert name in msg


def test_entry_points_are_not_loaded_at_construction():
    r = Registry("thing", "rlvr.no_such_group", ("no.such.module.anywhere",))
    assert r._loaded is False and r.names() == []  # a missing built-in module is skipped


def test_combine_weights_and_parts():
    text = "<think>t</think><answer>Paris</answer>"
    # qa_em 1 (match) × 1.0 + format_r1 1 (valid) × 0.1 + qa_f1 1 × 0.5 = 1.6
    s = combine({"qa_em": 1.0, "format_r1": 0.1, "qa_f1": 0.5}, text, ["paris"])
    assert s.reward == pytest.approx(1.6)
    assert s.parts == {"qa_em": 1.0, "format_r1": 1.0, "qa_f1": 1.0}
    assert s.correct is True
    # wrong answer, good format: 0 × 1.0 + 1 × 0.1 = 0.1; correct is the first verifier's verdict
    s = combine({"qa_em": 1.0, "format_r1": 0.1}, text, ["lyon"])
    assert s.reward == pytest.approx(0.1) and s.correct is False


def test_raising_verifier_scores_zero(scratch_names):
    rlvr.verifier("_test_raise")(_raisy)
    scratch_names.append("_test_raise")
    s = verify("_test_raise", "x", None)
    assert s.reward == 0.0 and s.correct is False and "boom" in s.reason


def test_pool_timeout_and_crash_keep_order_and_replace_workers(scratch_names):
    rlvr.verifier("_test_sleepy")(_sleepy)
    rlvr.verifier("_test_crashy")(_crashy)
    scratch_names += ["_test_sleepy", "_test_crashy"]
    with VerifierPool(workers=2) as pool:
        t0 = time.monotonic()
        scores = verify_batch("_test_sleepy", [("0", None), ("30", None), ("0.01", None)],
                              timeout_s=1.0, pool=pool)
        took = time.monotonic() - t0
        assert [s.reward for s in scores] == [1.0, 0.0, 1.0]
        assert "timed out after 1s" in scores[1].reason
        assert took < 10  # the 30 s sleeper was killed at its 1 s deadline
        assert pool.replaced == 1

        scores = verify_batch("_test_crashy", [("ok", None), ("die", None), ("ok", None)],
                              timeout_s=10, pool=pool)
        assert [s.reward for s in scores] == [1.0, 0.0, 1.0]
        assert "crashed (exit code 3)" in scores[1].reason
        assert pool.replaced == 2
        # the pool still works after losing workers
        assert verify_batch("qa_em", [("<answer>a b</answer>", "A B")], pool=pool)[0].reward == 1.0


def test_pool_combines_weights_and_catches_raises(scratch_names):
    rlvr.verifier("_test_raise2")(_raisy)
    scratch_names.append("_test_raise2")
    items = [{"completion": r"<think>t</think><answer>\boxed{2}</answer>", "answer": "2"},
             {"completion": "<answer>3</answer>", "answer": "2"}]
    with VerifierPool(workers=1) as pool:
        s = verify_batch({"math": 1.0, "format_r1": 0.5}, items, pool=pool, timeout_s=20)
        # first: 1 × 1.0 + 1 × 0.5 = 1.5; second: wrong (0) and no think (0) = 0
        assert [x.reward for x in s] == [1.0 + 0.5, 0.0]
        assert s[0].parts == {"math": 1.0, "format_r1": 1.0}
        s = verify_batch("_test_raise2", [("x", None)], pool=pool)
        assert s[0].reward == 0.0 and "boom" in s[0].reason


def test_in_process_batch_and_item_errors():
    assert [s.reward for s in verify_batch("qa_em", [("<answer>x</answer>", "x"),
                                                     ("<answer>y</answer>", "x")], workers=0)] \
        == [1.0, 0.0]
    with pytest.raises(ValueError, match="item 1"):
        verify_batch("qa_em", [("a", "b"), 42], workers=0)


def test_rlvr_verify_passes_info_and_names_bad_info(capsys):
    import json

    from rlvr.cli import main

    # qa_em reads the last <answer>; info can ask it to score plain text instead
    assert main(["verify", "qa_em", "--completion", "Paris", "--answer", "paris"]) == 0
    assert json.loads(capsys.readouterr().out)["reward"] == 0.0
    assert main(["verify", "qa_em", "--completion", "Paris", "--answer", "paris",
                 "--info", '{"require_answer_tag": false}']) == 0
    assert json.loads(capsys.readouterr().out)["reward"] == 1.0
    assert main(["verify", "qa_em", "--completion", "x", "--answer", "x", "--info", "[1]"]) == 2
    assert "--info: expected a JSON object" in capsys.readouterr().err
