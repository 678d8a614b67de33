"""The offline learners (DPO, SFT, reward model) under ``torchrun`` on CPU (gloo, two processes):
two ranks sharing each batch take the single-process step — the same gradient at every optimizer
step and the same logged metrics — including an epoch's last batch of one row, which leaves one
rank without any; rank 0 alone writes; a batch size the ranks cannot share is refused by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "helpers" / "offline_worker.py"


def _env(tmp_path):
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "RLVR_CACHE": str(tmp_path / "cache")}


def _torchrun(tmp_path, *args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), *args]
    return subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("algorithm, keys", [
    ("dpo", ("train/loss", "pref/margin", "pref/accuracy", "pref/logp_chosen", "train/grad_norm")),
    ("sft", ("train/loss", "train/tokens", "train/grad_norm")),
    ("rm", ("train/loss", "pref/margin", "pref/accuracy", "train/grad_norm")),
])
def test_two_ranks_take_the_single_process_step(tmp_path, algorithm, keys):
    single, double = tmp_path / "single", tmp_path / "double"
    res = subprocess.run([sys.executable, str(WORKER), str(single), algorithm], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = _torchrun(tmp_path, str(WORKER), str(double), algorithm)
    assert res.returncode == 0, res.stderr[-3000:]
    one = torch.load(single / "rank0.pt", weights_only=False)
    for rank in (0, 1):
        two = torch.load(double / f"rank{rank}.pt", weights_only=False)
        # 33 training rows in batches of 8: steps 1-4 of 8 rows, step 5 of one (rank 1 has none)
        assert len(two["grads"]) == len(one["grads"]) == 5
        for a, b in zip(one["grads"], two["grads"]):
            assert a.abs().sum() > 0
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    ref, rows = _rows(single / "metrics.jsonl"), _rows(double / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # rank 0 alone wrote, once per step
    for a, b in zip(ref, rows):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (b["step"], key)
    report = json.loads((double / "report.json").read_text())  # rank 0's, with its evaluation
    assert report["model_dir"] == str(double / "final") and (double / "final" / "config.json").exists()
    assert torch.load(double / "rank1.pt", weights_only=False)["report"]["rank"] == 1


def test_a_batch_size_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    res = _torchrun(tmp_path, "-m", "rlvr", "train", "dpo_tiny", "--output-dir", str(tmp_path / "r"),
                    "--run.progress", "false", "--pref.batch_size", "7", "--model.hidden_size", "32",
                    "--model.num_layers", "1", "--data.limit", "20")
    assert res.returncode != 0
    assert "pref.batch_size = 7 must be a multiple of the 2 training ranks" in res.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
