"""Typed config: YAML (nested or dotted) and --key value overrides, checked."""

import pytest

from rlvr.config import TrainConfig, load_config


def test_defaults_run_a_tiny_job():
    cfg = load_config()
    assert isinstance(cfg, TrainConfig) and cfg.model.name_or_path == "tiny"


def test_yaml_nested_and_dotted_then_cli(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("algorithm: rloo\nrollout:\n  samples_per_prompt: 8\noptim.lr: 0.001\n")
    cfg = load_config(p, ["--optim.lr", "0.5", "--rl.kl_coef=0.1", "--run.resume"])
    assert cfg.algorithm == "rloo" and cfg.rollout.samples_per_prompt == 8
    assert cfg.optim.lr == 0.5 and cfg.rl.kl_coef == 0.1 and cfg.run.resume is True


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        load_config(None, ["--rollout.samples_per_prompt", "many"])
    with pytest.raises(ValueError, match="nonexistent"):
        load_config(None, ["--rollout.nonexistent", "1"])
    with pytest.raises(ValueError, match="grpo needs rollout.samples_per_prompt >= 2"):
        load_config(None, ["--rollout.samples_per_prompt", "1"])
    with pytest.raises(ValueError, match="mini_batches_per_epoch"):
        load_config(None, ["--rl.mini_batches_per_epoch", "3"])
    p = tmp_path / "bad.yaml"
    p.write_text("- a list\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping"):
        load_config(p)
    with pytest.raises(FileNotFoundError, match="neither a file nor a bundled config"):
        load_config("no_such_config")
