"""``rlvr train CONFIG --plan``: the per-GPU memory estimate, read from the model's config only."""

import json
import subprocess
import sys

import pytest

from rlvr.core.config import load_config
from rlvr.core.models import load_policy
from rlvr.learners.plan import count_parameters, format_plan, model_config, plan

# Qwen2.5-3B's published config (the model of Search-R1's 3B runs): 3.09 B parameters.
QWEN25_3B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 2048,
             "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
             "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
             "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1e6}


def _qwen_dir(tmp_path):
    d = tmp_path / "qwen2.5-3b"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(QWEN25_3B))
    return d


def test_the_parameter_count_is_the_loaded_models(tmp_path):
    cfg = load_config("grpo_calculator", ["--run.output_dir", str(tmp_path / "run")])
    model, _ = load_policy(cfg.model)
    assert count_parameters(model_config(cfg)) == sum(p.numel() for p in model.parameters())


def test_a_3b_plan_reads_only_the_config(tmp_path):
    cfg = load_config("grpo_calculator", ["--model.name_or_path", str(_qwen_dir(tmp_path)),
                                          "--model.dtype", "bfloat16", "--rl.kl_coef", "0.001"])
    lines, facts = plan(cfg, world_size=8)
    assert facts["parameters"] == pytest.approx(3.09e9, rel=0.005)
    got = {x.what.split(" (")[0]: x.bytes for x in lines}
    n = facts["parameters"]
    assert got["policy weights"] == 4 * n  # float32 master weights, replicated
    assert got["optimizer state"] == 8 * n  # AdamW's two float32 moments
    assert got["reference model"] == 2 * n  # frozen, in bfloat16
    cfg.run.parallel = "fsdp"  # FSDP2 shards weights, gradients and optimizer state over 8 ranks
    sharded = {x.what.split(" (")[0]: x.bytes for x in plan(cfg, world_size=8)[0]}
    for key in ("policy weights", "gradients", "optimizer state", "reference model"):
        assert sharded[key] == pytest.approx(got[key] / 8), key
    text, fits = format_plan(cfg, 8, gpu_memory_gb=141)
    assert fits and "3.09 B parameters" in text and "fits in 141 GiB per GPU: yes" in text
    assert not format_plan(cfg, 8, gpu_memory_gb=8)[1]


def test_cli_plan_prints_exits_by_the_fit_and_trains_nothing(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "rlvr", "train", "grpo_calculator", "--plan", "--output-dir", str(out)]
    res = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "optimizer state (AdamW" in res.stdout and "fits in 80 GiB per GPU: yes" in res.stdout
    res = subprocess.run(base + ["--gpu-memory-gb", "0.001"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 1 and "fits in 0.001 GiB per GPU: NO" in res.stdout
    assert not out.exists()  # nothing was trained or written


def test_a_model_without_a_readable_config_is_named(tmp_path):
    cfg = load_config("grpo_calculator", ["--model.name_or_path", str(tmp_path / "nothing_here")])
    with pytest.raises(ValueError, match="model.name_or_path = .*nothing_here.*config.json"):
        plan(cfg)
