"""The rollout inspector: one self-contained HTML page built from run directories.

:func:`build_page` reads each directory's ``metrics.jsonl`` (curves), ``rollouts/`` (the
trajectories :mod:`rlvr.rollout.log` wrote) and, for an ``rlvr eval`` directory, ``report.json``;
it inlines ``page.html``, ``viewer.css`` and ``viewer.js`` (plain JS, inline SVG: the page works
offline, from ``file://``) with the data as one JSON script element. The page keeps its state in
the URL fragment (``#step=2&finish=done&traj=3``), so a view can be linked, and tests can load a
filtered view in a headless browser.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlvr.learners.metrics import read_metrics
from rlvr.rollout.log import ROLLOUT_DIR, read_run

HERE = Path(__file__).parent
#: per-record fields the page does not use (kept in the log files)
_DROP = ("info",)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_run(run_dir: str | Path, name: str | None = None, max_steps: int = 0) -> dict[str, Any]:
    """What the page shows of one directory: numeric metrics per step, logged trajectories by step
    (``"eval"`` for an evaluation), and an evaluation's report. A directory with neither metrics
    nor rollouts is refused, saying what was looked for."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such run directory")
    metrics_path = d / "metrics.jsonl"
    metrics = []
    if metrics_path.exists():
        for row in read_metrics(metrics_path):
            keep = {k: v for k, v in row.items() if _finite(v)}
            if "step" in keep:
                metrics.append(keep)
    logged = read_run(d)
    if not metrics and not logged:
        raise FileNotFoundError(
            f"{d}: neither metrics.jsonl nor {ROLLOUT_DIR}/*.jsonl.gz (an RL run writes them every "
            f"run.log_rollouts_every steps; `rlvr eval` writes {ROLLOUT_DIR}/eval.jsonl.gz)")
    steps = sorted(k for k in logged if k is not None)
    if max_steps and len(steps) > max_steps:  # evenly spaced, first and last kept
        idx = {round(i * (len(steps) - 1) / (max_steps - 1)) for i in range(max_steps)} if max_steps > 1 else {len(steps) - 1}
        steps = [steps[i] for i in sorted(idx)]
    by_step = {str(k): [_slim(r) for r in logged[k]] for k in steps}
    if None in logged:
        by_step["eval"] = [_slim(r) for r in logged[None]]
    report = {}
    if (d / "report.json").exists():
        try:
            report = json.loads((d / "report.json").read_text())
        except json.JSONDecodeError:
            report = {}
    summary = {}
    if isinstance(report.get("average"), dict):  # an `rlvr eval` report
        summary = {k: v for k, v in report["average"].items() if _finite(v)}
    return {"name": name or d.name or str(d), "dir": str(d), "metrics": metrics, "steps": by_step,
            "summary": summary}


def _slim(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in _DROP}
    out["segments"] = [{k: v for k, v in s.items() if k != "text"} for s in rec.get("segments", [])]
    return out


def default_compare(run_dir: str | Path) -> Path | None:
    """The default job's unmasked ablation (``DIR/no_mask``) when it holds a run."""
    d = Path(run_dir) / "no_mask"
    return d if (d / "metrics.jsonl").exists() or (d / "rollouts").is_dir() else None


def build_page(runs: list[dict[str, Any]], title: str = "rlvr rollouts") -> str:
    """The HTML of the inspector over ``runs`` (from :func:`load_run`; the first is the primary
    run, a second is shown side by side)."""
    page = (HERE / "page.html").read_text(encoding="utf-8")
    css = (HERE / "viewer.css").read_text(encoding="utf-8")
    js = (HERE / "viewer.js").read_text(encoding="utf-8")
    data = json.dumps({"title": title, "runs": runs}, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":"))
    # inside <script> only "</" can end the element early; "<\/" is the same JSON string
    data = data.replace("</", "<\\/").replace("<!--", "<\\!--")
    import html

    return (page.replace("{{TITLE}}", html.escape(title)).replace("/*{{CSS}}*/", css)
            .replace("/*{{JS}}*/", js.replace("</script", "<\\/script"))
            .replace("{{DATA}}", data))


def write_page(run_dirs: list[str | Path], out: str | Path | None = None, max_steps: int = 0) -> Path:
    """Build the page over ``run_dirs`` (the first one's ``no_mask/`` joins when only one is
    given) and write it (default ``<first dir>/view.html``)."""
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) == 1 and default_compare(dirs[0]) is not None:
        dirs.append(default_compare(dirs[0]))
    names = _names(dirs)
    runs = [load_run(d, n, max_steps) for d, n in zip(dirs, names)]
    path = Path(out) if out else dirs[0] / "view.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_page(runs, title=f"rlvr · {' vs '.join(names)}"), encoding="utf-8")
    return path


def _names(dirs: list[Path]) -> list[str]:
    """Short labels: the directory name, its path relative to the first directory when inside it."""
    out = []
    for i, d in enumerate(dirs):
        if i and d.resolve().is_relative_to(dirs[0].resolve()):
            out.append(f"{dirs[0].name}/{d.resolve().relative_to(dirs[0].resolve())}")
        else:
            out.append(d.resolve().name or str(d))
    if len(set(out)) < len(out):
        out = [str(d) for d in dirs]
    return out
