import itertools
import json

from rlvr.core.config import EnvConfig, RolloutConfig
from rlvr.data.tasks import load_tasks
from rlvr.data.preferences import load_preference_data, load_sft_data
from rlvr.rollout.rejection import accepted, rejection_sample
from rlvr.rollout.episodes import make_env_factory
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Trajectory


def calc_policy():
    """Turn 1: a calculator call; turn 2: the answer — right for even episodes, wrong (+1) for odd.

    All episodes of the batch take each turn together, in order, so the k-th answer is episode k's.
    """
    answers = itertools.count()

    def policy(context: str) -> str:
        if "<result>" not in context:
            return f"<calc>{context.split('What is ')[-1].split('?')[0]}</calc>"
        value = int(context.rsplit("<result>", 1)[1].split("</result>")[0])
        return f"<answer>{value if next(answers) % 2 == 0 else value + 1}</answer>"

    return policy


def run(tok, tmp_path, mode):
    tasks = load_tasks("calculator", limit=3)
    engine = ScriptedEngine(tok, calc_policy())
    out = tmp_path / f"{mode}.jsonl"
    stats = rejection_sample(engine, tok, make_env_factory(EnvConfig(name="calculator")), tasks, out,
                             samples_per_prompt=2, rollout_cfg=RolloutConfig(max_turns=3, max_new_tokens=32),
                             mode=mode)
    return tasks, stats, [json.loads(x) for x in out.read_text().splitlines()]


def test_sft_mode_keeps_verified_episodes_token_exact(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    tasks, stats, rows = run(tok, tmp_path, "sft")
    # 3 tasks × 2 samples; alternate episodes answer right → 3 accepted, one per task
    assert stats["samples"] == 6 and stats["accepted"] == 3 and stats["rows"] == 3
    assert stats["acceptance_rate"] == 0.5 and stats["tasks_solved"] == 3
    for row, task in zip(rows, tasks):
        assert row["completion"].endswith(f"<answer>{task.answer}</answer>")
        # the calculator's observation sits between the two sampled turns with loss_mask 0
        mask = row["loss_mask"]
        trained = tok.decode([t for t, m in zip(row["token_ids"], mask) if m])
        assert "<result>" not in trained and "<calc>" in trained and "<answer>" in trained
        assert "<result>" in row["completion"]
    # the SFT loader reads the file back exactly
    trajs = load_sft_data(str(tmp_path / "sft.jsonl"), tok)
    assert [t.token_ids for t in trajs] == [r["token_ids"] for r in rows]
    assert [t.loss_mask for t in trajs] == [r["loss_mask"] for r in rows]


def test_pairs_mode_pairs_right_with_wrong_of_the_same_prompt(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    tasks, stats, rows = run(tok, tmp_path, "pairs")
    assert stats["rows"] == 3
    for row, task in zip(rows, tasks):
        assert row["chosen"].endswith(f"<answer>{task.answer}</answer>")
        assert row["rejected"].endswith(f"<answer>{int(task.answer) + 1}</answer>")
        assert row["chosen_reward"] == 1.0 and row["rejected_reward"] == 0.0
    assert len(load_preference_data(str(tmp_path / "pairs.jsonl"), tok)) == 3


def test_accepted_rule():
    t = Trajectory.from_prompt([1])
    t.correct, t.reward = True, 0.0
    assert accepted(t)
    t.correct = False
    assert not accepted(t)
    t.correct, t.reward = None, 0.7  # no correctness verdict: the reward threshold decides
    assert accepted(t, min_reward=0.5) and not accepted(t, min_reward=1.0)
    t.correct, t.error = True, "engine failed"
    assert not accepted(t)
