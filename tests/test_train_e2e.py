"""End to end: the bundled GRPO config through ``rlvr train``; the reward rises.

The task (calculator prompts rewarded by qa_em plus format_r1 with per-tag partial credit) is one a
tiny random model can learn in a few dozen steps: emitting the four think/answer tags once each.
"""

import json
import os
import subprocess
import sys


def test_rlvr_train_grpo_calculator_reward_rises(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, "-m", "rlvr", "train", "grpo_calculator", "--output-dir", str(out),
                          "--run.progress", "false"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("config.yaml", "metrics.jsonl", "report.json", "metrics.png"):
        assert (out / name).exists(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = len(rows)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(r["train/optimizer_steps"] == 1 for r in rows)
    reward = [r["reward/mean"] for r in rows]
    first, last = sum(reward[:5]) / 5, sum(reward[-5:]) / 5
    # a random policy scores ~0.03 (a tag appears exactly once by chance); learning the tags
    # lifts the mean reward well above that
    assert last > first + 0.05 and last > 2 * first, reward
    assert (out / "checkpoints" / f"step_{steps:06d}" / "model" / "config.json").exists()
