"""A run killed after a checkpoint and resumed logs the metrics an uninterrupted run logs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlvr.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

ARGS = ["grpo_calculator", "--run.steps", "4", "--run.save_every", "2", "--run.progress", "false",
        "--rl.prompts_per_step", "2", "--rollout.samples_per_prompt", "4",
        "--rollout.max_new_tokens", "12", "--rollout.max_turns", "1", "--optim.micro_batch_size", "4",
        "--model.hidden_size", "32", "--model.num_layers", "1"]
# Timings differ between runs; everything else must be identical.
VOLATILE = ("time/",)


def _cmd(out, *extra):
    return [sys.executable, "-m", "rlvr", "train", *ARGS, "--output-dir", str(out), *extra]


def _env():
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _rows(path):
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd(full), check=True, env=_env(), capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while latest_checkpoint(killed) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up, as with a crash or preemption
    finally:
        proc.wait()
    ckpt = latest_checkpoint(killed)
    assert ckpt is not None and ckpt.name != "step_000004", "the run was not interrupted mid-way"

    subprocess.run(_cmd(killed, "--resume"), check=True, env=_env(), capture_output=True, timeout=300)
    a, b = _rows(full), _rows(killed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b


def test_checkpoint_roundtrip_and_atomic_listing(tmp_path, tiny_tokenizer):
    from rlvr.models import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    torch.manual_seed(5)
    save_checkpoint(tmp_path, 3, model=model, optimizer=opt, extra={"data_position": 12})
    (tmp_path / "checkpoints" / ".tmp-step_000009-1").mkdir()  # a write that never finished
    (tmp_path / "checkpoints" / "step_000007").mkdir()  # a directory without state.pt
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003"]
    want = torch.rand(1)  # the draw that follows the saved RNG state
    other = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=1)
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    torch.manual_seed(0)
    state = load_checkpoint(latest_checkpoint(tmp_path), model=other, optimizer=opt2)
    assert state == {"step": 3, "extra": {"data_position": 12}}
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert torch.equal(torch.rand(1), want)  # RNG restored despite manual_seed(0) before loading
    assert (tmp_path / "checkpoints" / "step_000003" / "model" / "config.json").exists()
