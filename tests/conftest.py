import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from rlvr.core.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from rlvr.core.models import build_tiny_model

    return build_tiny_model(tiny_tokenizer, hidden_size=64, num_layers=2, seed=0)


def tiny_learner_config(root, algorithm="grpo", *, prompts=2, steps=2, **rl):
    """A tiny on-policy config (run directory ``root/algorithm``, CPU, 2 samples per prompt of at
    most 6 tokens per turn); ``rl`` sets fields of ``cfg.rl``. Tests import it from conftest."""
    from rlvr.core.config import TrainConfig

    cfg = TrainConfig(algorithm=algorithm)
    cfg.run.output_dir = str(root / algorithm)
    cfg.run.steps = steps
    cfg.run.progress = False
    cfg.run.device = "cpu"
    cfg.rl.prompts_per_step = prompts
    cfg.rollout.samples_per_prompt = 2
    cfg.rollout.max_turns = 2
    cfg.rollout.max_new_tokens = 6
    cfg.rollout.max_total_tokens = 96
    cfg.optim.micro_batch_size = 2
    cfg.optim.lr = 1e-3
    for k, v in rl.items():
        setattr(cfg.rl, k, v)
    return cfg.validate()


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_slow = pytest.mark.skip(reason="opt-in: set RLVR_SLOW=1")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not os.environ.get("RLVR_SLOW"):
            item.add_marker(skip_slow)
