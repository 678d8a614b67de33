"""Data-parallel training under ``torchrun`` on CPU (gloo, two processes on two cores): two ranks
give the single-process gradient of the same global batch, rank 0 alone writes, and a checkpoint
resumes on another world size."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_ranks_match

WORKER = Path(__file__).parent / "helpers" / "dist_worker.py"
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _torchrun(*args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("algorithm", ["grpo", "reinforce_pp", "ppo"])
def test_two_ranks_give_the_single_process_gradient(tmp_path, algorithm):
    single, double = tmp_path / "single", tmp_path / "double"
    res = subprocess.run([sys.executable, str(WORKER), str(single), algorithm], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = _torchrun(str(WORKER), str(double), algorithm)
    assert res.returncode == 0, res.stderr[-3000:]
    # every optimizer step of both training steps (PPO: the policy's and the critic's)
    assert_ranks_match(single, double)
    # the logged numbers are the global batch's: rank 0 wrote them, once per step
    rows = [json.loads(x) for x in (double / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "train/loss", "train/tokens", "train/shaped_reward", "train/advantage"):
        assert rows[-1][key] == pytest.approx(ref[-1][key], rel=1e-4, abs=1e-6), key


def test_torchrun_cli_run_then_resume_on_one_process(tmp_path):
    out = tmp_path / "run"
    res = _torchrun("-m", "rlvr", "train", "grpo_calculator", "--output-dir", str(out),
                    "--run.steps", "2", "--run.progress", "false", "--rl.prompts_per_step", "2",
                    "--rollout.samples_per_prompt", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 alone writes
    assert rows[0]["train/trajectories_used"] == 8  # 2 prompts × 4 samples over both ranks
    assert (out / "checkpoints" / "step_000002" / "state.pt").exists()
    res = subprocess.run([sys.executable, "-m", "rlvr", "train", "grpo_calculator", "--output-dir",
                          str(out), "--resume", "--run.steps", "3", "--run.progress", "false",
                          "--rl.prompts_per_step", "2", "--rollout.samples_per_prompt", "4"],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # continued from step 2, on one process


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    res = _torchrun("-m", "rlvr", "train", "grpo_calculator", "--output-dir", str(tmp_path / "r"),
                    "--run.steps", "1", "--run.progress", "false", "--rl.prompts_per_step", "3")
    assert res.returncode != 0
    assert "rl.prompts_per_step = 3 must be a multiple of the 2 training ranks" in res.stderr


def test_fsdp_two_ranks_give_the_single_process_gradient_and_resume_on_one_process(tmp_path):
    """run.parallel = fsdp: FSDP2 reduce-scatters summed gradients (not averaged), so the sharded
    gradient, gathered whole, is the single-process one; the DCP checkpoint of two ranks then
    continues on one process exactly as the single-process checkpoint does."""
    single, double = tmp_path / "single", tmp_path / "double"
    res = subprocess.run([sys.executable, str(WORKER), str(single), "grpo"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = _torchrun(str(WORKER), str(double), "grpo", "fsdp")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_ranks_match(single, double)
    assert len(torch.load(single / "rank0.pt")["grads"]) == 2
    rows = [json.loads(x) for x in (double / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for a, b in zip(ref, rows):
        for key in ("reward/mean", "train/loss", "train/grad_norm", "train/kl", "train/tokens"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (b["step"], key)
    ckpt = double / "checkpoints" / "step_000002"
    state = torch.load(ckpt / "state.pt", weights_only=False)
    assert state["format"] == "dcp" and state["world_size"] == 2 and state["model"] is None
    assert (ckpt / "dcp" / ".metadata").exists() and (ckpt / "model" / "config.json").exists()
    # a third step from each run's checkpoint: 2 fsdp ranks → 1 process, and 1 process → 2 fsdp
    # ranks (the replicated checkpoint sharded on load) take the single-process step: the same
    # gradient, and the same weights after it (AdamW's moments restored too)
    shutil.copytree(single, tmp_path / "single_to_fsdp")
    for out, flags in ((single, []), (double, ["fsdp"])):
        res = subprocess.run([sys.executable, str(WORKER), str(out), "grpo", *flags, "resume"],
                             env=ENV, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    res = _torchrun(str(WORKER), str(tmp_path / "single_to_fsdp"), "grpo", "fsdp", "resume")
    assert res.returncode == 0, res.stderr[-3000:]
    want = torch.load(single / "rank0-resumed.pt")
    for got in (double / "rank0-resumed.pt", tmp_path / "single_to_fsdp" / "rank1-resumed.pt"):
        got = torch.load(got)
        assert len(got["grads"]) == len(want["grads"]) == 1
        torch.testing.assert_close(got["grads"][0], want["grads"][0], rtol=1e-4, atol=1e-6)
        assert got["weights"].keys() == want["weights"].keys()
        # AdamW divides by sqrt(v): where a gradient is ~1e-8, float noise moves the update by up
        # to ~1e-5; moments lost on resume would move most weights by ~lr = 1e-2
        for k, w in want["weights"].items():
            torch.testing.assert_close(got["weights"][k], w, rtol=1e-3, atol=1e-4)
    rows = [json.loads(x) for x in (double / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_torchrun_cli_fsdp_rollouts_then_resume_on_one_process(tmp_path):
    """The in-process HF engine generates with a gathered full copy of the sharded policy (its
    probe check against the sharded trainer passes every step), rank 0 alone evaluates on that
    copy, and the run resumes on one process."""
    out = tmp_path / "run"
    args = ["grpo_calculator", "--output-dir", str(out), "--run.progress", "false",
            "--rl.prompts_per_step", "2", "--rollout.samples_per_prompt", "4",
            "--data.eval", "data/calculator_format.jsonl", "--data.limit", "8"]
    res = _torchrun("-m", "rlvr", "train", *args, "--run.steps", "2", "--run.parallel", "fsdp")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["train/trajectories_used"] == 8
    assert "eval/accuracy" in rows[1] and "eval/accuracy" not in rows[0]  # the last step's
    assert torch.load(out / "checkpoints" / "step_000002" / "state.pt", weights_only=False)["format"] == "dcp"
    res = subprocess.run([sys.executable, "-m", "rlvr", "train", *args, "--resume", "--run.steps", "3"],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("overrides, named", [
    (["--algorithm", "ppo"], "ppo's critic"),
    (["--model.lora_rank", "4"], "model.lora_rank > 0"),
    (["--rollout.servers", "[http://127.0.0.1:9]"], "rollout.servers"),
])
def test_fsdp_refuses_what_it_cannot_shard_by_name(overrides, named):
    from rlvr.core.config import load_config
    from rlvr.learners.onpolicy import train

    cfg = load_config("grpo_calculator", ["--run.parallel", "fsdp", *overrides])
    with pytest.raises(ValueError, match=f"run.parallel = fsdp does not support {named}"):
        train(cfg)
