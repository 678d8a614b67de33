"""The per-step metrics mirrors: Weights & Biases (a fake ``wandb`` module records the calls;
the real package is an optional install) and TensorBoard."""

import importlib.machinery
import json
import sys
import types

import pytest
import torch

from rlvr.core.config import TrainConfig, load_config
from rlvr.learners.dispatch import learner_for
from rlvr.learners.metrics import MetricsLogger, plain_config, read_metrics


class FakeWandb(types.ModuleType):
    """Records ``wandb.init`` keyword arguments and each run's ``log`` / ``finish`` calls."""

    def __init__(self):
        super().__init__("wandb")
        # a spec, as a real module has: libraries probing find_spec("wandb") then look for its
        # installed metadata, find none, and leave it alone
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.runs = []

    def init(self, **kwargs):
        run = types.SimpleNamespace(kwargs=kwargs, logged=[], finished=False,
                                    id=kwargs.get("id") or f"run{len(self.runs)}")
        run.log = lambda data, step=None: run.logged.append((step, dict(data)))
        run.finish = lambda: setattr(run, "finished", True)
        self.runs.append(run)
        return run


@pytest.fixture()
def fake_wandb(monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_wandb_gets_the_numbers_of_each_jsonl_row(tmp_path, fake_wandb):
    cfg = TrainConfig()
    logger = MetricsLogger(tmp_path / "run1", progress=False, wandb_project="rlvr-tests", wandb_config=cfg)
    [run] = fake_wandb.runs
    assert run.kwargs["project"] == "rlvr-tests" and run.kwargs["name"] == "run1"
    assert run.kwargs["config"]["rl"]["kl_coef"] == 0.0 and run.kwargs["config"]["algorithm"] == "grpo"
    assert run.kwargs["id"] is None and run.kwargs["resume"] is None  # a fresh run
    logger.log(1, {"reward/mean": 0.5, "train/loss": torch.tensor(2.0), "train/optimizer_steps": 3,
                   "note": "text", "train/kl": float("nan")})
    logger.log(2, {"reward/mean": 0.75})
    logger.close()
    rows = read_metrics(tmp_path / "run1" / "metrics.jsonl")
    assert rows[0]["train/kl"] == "nan" and rows[0]["note"] == "text"  # jsonl keeps everything
    # W&B gets each row's numbers at its step; text (and a non-finite value, written as text) stays out
    assert run.logged == [(1, {"reward/mean": 0.5, "train/loss": 2.0, "train/optimizer_steps": 3}),
                          (2, {"reward/mean": 0.75})]
    assert run.finished
    # a resumed run continues the same W&B run
    assert (tmp_path / "run1" / "wandb_run_id").read_text().strip() == "run0"
    MetricsLogger(tmp_path / "run1", progress=False, resume_step=2, wandb_project="rlvr-tests").close()
    assert fake_wandb.runs[1].kwargs["id"] == "run0" and fake_wandb.runs[1].kwargs["resume"] == "allow"


def test_wandb_missing_is_a_clear_error_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    MetricsLogger(tmp_path / "off", progress=False).close()  # off by default: never imported
    with pytest.raises(ImportError, match=r"run.wandb_project = 'p'.*pip install wandb"):
        MetricsLogger(tmp_path / "on", progress=False, wandb_project="p")


def test_wandb_project_from_the_command_line_reaches_a_training_run(tmp_path, tiny_tokenizer, fake_wandb):
    from rlvr.core.models import build_tiny_model
    from rlvr.data.tasks import load_tasks

    cfg = load_config(None, ["--algorithm", "reinforce", "--run.wandb_project", "rlvr-tests",
                             "--run.output_dir", str(tmp_path / "rf"), "--run.steps", "2",
                             "--run.progress", "false", "--run.device", "cpu",
                             "--rl.prompts_per_step", "2", "--rollout.samples_per_prompt", "2",
                             "--rollout.max_new_tokens", "4", "--rollout.max_total_tokens", "96"])
    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    learner_for("reinforce")(cfg, model=model, tokenizer=tiny_tokenizer, tasks=load_tasks("calculator", 4))
    [run] = fake_wandb.runs
    rows = read_metrics(tmp_path / "rf" / "metrics.jsonl")
    assert [step for step, _ in run.logged] == [r["step"] for r in rows] == [1, 2]
    for (_, logged), row in zip(run.logged, rows):  # the same per-step dict, number for number
        assert logged == {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
    assert "reward/mean" in run.logged[0][1] and "train/loss" in run.logged[0][1]
    assert run.kwargs["config"]["run"]["wandb_project"] == "rlvr-tests" and run.finished


def test_plain_config_never_copies_objects():
    index = object()
    cfg = TrainConfig()
    cfg.env.settings = {"index": index, "topk": 2}
    out = plain_config(cfg)
    assert out["env"]["settings"] == {"index": repr(index), "topk": 2}
    assert json.dumps(out)  # everything W&B stores is plain data


def test_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="tensorboard is not installed (optional)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, progress=False, tensorboard=True)
    logger.log(1, {"reward/mean": 0.25, "note": "text"})
    logger.log(2, {"reward/mean": 0.5})
    logger.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, 0.25), (2, 0.5)]


def test_tensorboard_writer_gets_each_rows_numbers(tmp_path, monkeypatch):
    """The TensorBoard mirror against a recording stand-in for ``SummaryWriter`` (runs whether or
    not tensorboard is installed)."""
    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("open", log_dir))

        def add_scalar(self, key, value, step):
            calls.append((key, value, step))

        def close(self):
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    logger = MetricsLogger(tmp_path, progress=False, tensorboard=True)
    logger.log(3, {"reward/mean": 0.25, "train/loss": torch.tensor(1.5), "note": "text"})
    logger.close()
    assert calls == [("open", str(tmp_path / "tensorboard")), ("reward/mean", 0.25, 3),
                     ("train/loss", 1.5, 3), ("close",)]


def test_tensorboard_missing_warns_and_keeps_the_jsonl(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    logger = MetricsLogger(tmp_path, progress=False, tensorboard=True)
    logger.log(1, {"reward/mean": 0.25})
    logger.close()
    assert "TensorBoard is not installed" in caplog.text
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "reward/mean": 0.25}]
