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


def assert_ranks_match(single, double, ranks=(0, 1), at_least=2):
    """Every rank's recorded optimizer-step gradients (``OUT/rank{r}.pt``, written by
    tests/helpers/dist_worker.py) equal the one process's, step by step, and none is zero."""
    import torch

    one = torch.load(single / "rank0.pt")
    for rank in ranks:
        two = torch.load(double / f"rank{rank}.pt")
        assert len(two["grads"]) == len(one["grads"]) >= at_least
        for a, b in zip(one["grads"], two["grads"]):
            assert a.abs().sum() > 0
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def mixed_trajectories(n=8):
    """Trajectories with prompt, sampled, observation and sampled tokens, of different lengths."""
    from rlvr.core.types import Trajectory

    out = []
    for i in range(n):
        t = Trajectory.from_prompt([5, 6, 7][: 1 + i % 3], group_id=f"g{i // 2}")
        t.append_sampled([10 + i, 11, 12][: 1 + i % 3], [-1.0] * (1 + i % 3))
        t.append_observation([20, 21 + i])
        t.append_sampled([30, 31 + i % 4], [-2.0, -1.5])
        t.reward = float(i % 2)
        out.append(t)
    return out


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_slow = pytest.mark.skip(reason="opt-in: set RLVR_SLOW=1")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not os.environ.get("RLVR_SLOW"):
            item.add_marker(skip_slow)
