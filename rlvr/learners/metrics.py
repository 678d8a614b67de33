"""Training metrics: ``metrics.jsonl`` (one JSON object per step), a progress bar, and optional
mirrors of the same rows in TensorBoard (``run.log_tensorboard``) and Weights & Biases
(``run.wandb_project``; the ``wandb`` package is imported only then).

Each line of ``metrics.jsonl`` is ``{"step": k, ...}`` with flat keys grouped by prefix:
``reward/...`` (mean, std, per verifier part, accuracy), ``rollout/...`` (response length, turns and
tool calls per trajectory, truncation, zero-variance group share), ``env/...`` (the environment's
:meth:`rlvr.core.environment.Environment.batch_metrics`), ``train/...`` (loss, KL to the reference,
entropy, clip fraction, approx-KL to the behaviour policy, grad norm, optimizer steps, learning
rate), ``time/...`` (seconds per phase, tokens per second) and ``eval/...``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from rlvr.core.types import Trajectory

log = logging.getLogger(__name__)

#: Shown on the progress bar when present.
BAR_KEYS = ("reward/mean", "train/kl", "train/entropy", "rollout/response_len", "time/step")


class MetricsLogger:
    """Appends one JSON object per step to ``<output_dir>/metrics.jsonl``.

    ``resume_step``: when continuing a run from a checkpoint at that step, lines for later steps
    (logged by the killed run after its last checkpoint) are dropped so the file reads as if the
    run had never stopped. ``tensorboard`` and ``wandb_project`` mirror every row's numbers to
    TensorBoard (``<output_dir>/tensorboard``) and to that Weights & Biases project
    (``wandb_config``: the run's settings, a config dataclass or a dict, shown with it).
    """

    def __init__(self, output_dir: str | Path, *, total_steps: int | None = None, progress: bool = True,
                 tensorboard: bool = False, resume_step: int | None = None,
                 wandb_project: str | None = None, wandb_config: Any = None) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            keep = [row for row in read_metrics(self.path) if row.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in keep))
        self._mirrors: list = []  # TensorBoard / W&B writers: log(step, scalars), close()
        if tensorboard:
            tb = TensorBoardWriter.open(self.dir / "tensorboard")
            if tb is not None:
                self._mirrors.append(tb)
        if wandb_project:
            self._mirrors.append(WandbWriter(wandb_project, self.dir, wandb_config, resume_step))
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=resume_step or 0, desc="train", dynamic_ncols=True)

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._mirrors:
            scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
            for mirror in self._mirrors:
                mirror.log(int(step), scalars)
        if self._bar is not None:
            self._bar.set_postfix({k.split("/")[-1]: f"{row[k]:.3g}" for k in BAR_KEYS
                                   if isinstance(row.get(k), (int, float))}, refresh=False)
            if step > self._bar.n:
                self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        for mirror in self._mirrors:
            mirror.close()


class TensorBoardWriter:
    """Scalars of each step as TensorBoard events under ``<output_dir>/tensorboard``."""

    def __init__(self, writer) -> None:
        self.writer = writer

    @classmethod
    def open(cls, log_dir: Path) -> "TensorBoardWriter | None":
        """None (with a warning) when TensorBoard is not installed: the jsonl file is the record."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("run.log_tensorboard is set but TensorBoard is not installed "
                        "(pip install tensorboard); logging to metrics.jsonl only")
            return None
        return cls(SummaryWriter(str(log_dir)))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    """Scalars of each step as one ``wandb.log(row, step=step)`` call in project ``project``.

    The run is named after the output directory and keeps its files there; ``config`` (the
    training config as a dict) is shown with the run. The W&B run id is kept in
    ``<output_dir>/wandb_run_id``, so a resumed training run (``resume_step``) continues the same
    W&B run instead of starting a new one."""

    def __init__(self, project: str, output_dir: Path, config: Any = None,
                 resume_step: int | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError(f"run.wandb_project = {project!r} logs to Weights & Biases, which needs "
                              f"the wandb package: pip install wandb (or 'rlvr[wandb]'), or unset "
                              f"run.wandb_project") from None
        id_file = Path(output_dir) / "wandb_run_id"
        resume_id = id_file.read_text().strip() if resume_step is not None and id_file.exists() else None
        self.run = wandb.init(project=project, name=Path(output_dir).resolve().name,
                              dir=str(output_dir), config=plain_config(config or {}), id=resume_id,
                              resume="allow" if resume_id else None)
        id_file.write_text(str(self.run.id) + "\n")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def plain_config(obj: Any) -> Any:
    """A config dataclass as nested dicts of plain values; anything else (an index object passed
    in ``env.settings``) as its ``repr``, never copied."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain_config(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_config(v) for v in obj]
    return obj if obj is None or isinstance(obj, (str, int, float, bool)) else repr(obj)


def environment_metrics(env_class, trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """The environment class's :meth:`~rlvr.core.environment.Environment.batch_metrics` of one rollout
    batch, every key under ``env/`` (added where missing). A class without the method (a plugin
    not derived from :class:`rlvr.core.environment.Environment`) contributes nothing."""
    hook = getattr(env_class, "batch_metrics", None)
    if hook is None:
        return {}
    out = {}
    for k, v in (hook(list(trajectories)) or {}).items():
        if not isinstance(v, (int, float)) and not hasattr(v, "item"):
            raise TypeError(f"{getattr(env_class, '__name__', env_class)}.batch_metrics: value of "
                            f"{k!r} must be a number, got {type(v).__name__}")
        out[k if k.startswith("env/") else f"env/{k}"] = float(v)
    return out


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / inf
    return v


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``. A final line that does not parse is what a crash in the
    middle of a write leaves behind: it is dropped with a warning. Any other bad line raises a
    ``ValueError`` that names ``FILE:LINE``."""
    path = Path(path)
    lines = [(n, raw) for n, raw in enumerate(path.read_bytes().split(b"\n"), 1) if raw.strip()]
    rows = []
    for k, (n, raw) in enumerate(lines):
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if k == len(lines) - 1:
                log.warning("%s:%d: dropping a torn last line (%s), left by a run stopped in the "
                            "middle of a write: %.80r", path, n, e, raw)
                break
            raise ValueError(f"{path}:{n}: not a valid metrics row ({e}); only a torn last line "
                             f"is dropped, so this file was edited or damaged") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object per step, got "
                             f"{type(row).__name__}")
        rows.append(row)
    return rows


def rollout_metrics(trajectories: Sequence[Trajectory], samples_per_prompt: int) -> dict[str, float]:
    """Reward, length, turn and tool-call statistics of one rollout batch."""
    n = max(len(trajectories), 1)
    rewards = [t.reward for t in trajectories]
    mean = sum(rewards) / n
    out = {"reward/mean": mean,
           "reward/std": math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)}
    judged = [t.correct for t in trajectories if t.correct is not None]
    if judged:
        out["reward/accuracy"] = sum(judged) / len(judged)
    for part in sorted({k for t in trajectories for k in t.reward_parts}):
        out[f"reward/{part}"] = sum(t.reward_parts.get(part, 0.0) for t in trajectories) / n
    out["rollout/response_len"] = sum(t.num_sampled for t in trajectories) / n
    out["rollout/total_len"] = sum(len(t) for t in trajectories) / n
    out["rollout/turns"] = sum(len(t.turns) for t in trajectories) / n
    out["rollout/tool_calls"] = sum(len(t.tool_calls) for t in trajectories) / n
    out["rollout/invalid_tool_calls"] = sum(sum(not c.valid for c in t.tool_calls) for t in trajectories) / n
    out["rollout/truncated"] = sum(t.truncated for t in trajectories) / n
    out["rollout/errors"] = sum(t.error is not None for t in trajectories) / n
    out["rollout/eos"] = sum(t.finish_reason in ("eos", "done") for t in trajectories) / n
    G = samples_per_prompt
    groups = [rewards[i:i + G] for i in range(0, len(rewards), G)]
    if G > 1 and groups:
        out["rollout/zero_variance_groups"] = sum(max(g) == min(g) for g in groups) / len(groups)
    return out


def plot_metrics(metrics_jsonl: str | Path | dict[str, str | Path], out_png: str | Path,
                 keys: Iterable[str] | None = None) -> Path:
    """One panel per key against step (default: reward, KL, entropy, response length).

    ``metrics_jsonl`` is one run's file, or ``{label: file}`` to draw several runs on the same
    panels (a legend names them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = metrics_jsonl if isinstance(metrics_jsonl, dict) else {"": metrics_jsonl}
    rows = {label: read_metrics(path) for label, path in runs.items()}
    keys = list(keys or ("reward/mean", "train/kl", "train/entropy", "rollout/response_len"))
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float))
                                   for rs in rows.values() for r in rs)] or keys[:1]
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.2 * len(keys)), squeeze=False)
    for ax, k in zip(axes[:, 0], keys):
        for label, rs in rows.items():
            pts = [(r["step"], r[k]) for r in rs if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label or None)
        ax.set_ylabel(k)
        ax.grid(alpha=0.3)
    if len(rows) > 1:
        axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
