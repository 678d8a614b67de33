"""The inspector in a real headless Chromium, on a real run directory laid out like the default
job's (a masked GRPO run in DIR, the unmasked ablation in DIR/no_mask): the rendered token spans and
their mask classes equal the trajectory file's, a filter from the URL fragment narrows the groups,
a pinned token shows its numbers, and a screenshot is taken (``RLVR_VIEWER_PNG=PATH`` keeps it,
e.g. ``docs/viewer.png``). Skips, saying so, only where no Chromium can be found."""

import gzip
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rlvr.viewer import write_page
from test_rollout_log import run_probe

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    if os.environ.get("RLVR_CHROMIUM"):
        return os.environ["RLVR_CHROMIUM"]
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=f"no Chromium found (looked for "
                                f"{', '.join(BROWSERS)} on PATH and $RLVR_CHROMIUM); on Debian: "
                                f"apt-get install chromium")


def headless(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


class Spans(HTMLParser):
    """Token spans per pane (``traj-a`` / ``traj-b``), group cells and the pinned tip of a DOM."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pane, self.spans, self.cells, self.tip, self.count = None, {}, [], None, ""
        self._span = self._cell = self._tip = self._count = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") in ("traj-a", "traj-b"):
            self.pane = a["id"]
        cls = (a.get("class") or "").split()
        if tag == "span" and "tok" in cls and "data-i" in a:
            self._span = {"i": int(a["data-i"]), "id": int(a["data-id"]), "cls": set(cls), "text": ""}
        elif tag == "span" and "traj-cell" in cls:
            self._cell = {"index": int(a["data-index"]), "selected": "selected" in cls, "text": ""}
        elif a.get("id") == "tip":
            self._tip, self.tip = True, {"hidden": "hidden" in a, "text": ""}
        elif a.get("id") == "match-count":
            self._count = True

    def handle_data(self, data):
        for cur in (self._span, self._cell):
            if cur is not None:
                cur["text"] += data
        if self._tip:
            self.tip["text"] += data
        if self._count:
            self.count += data

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.spans.setdefault(self.pane, []).append(self._span)
            self._span = None
        elif tag == "span" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        elif tag == "div" and self._tip:
            self._tip = None
        elif tag == "span" and self._count:
            self._count = None


def dom(page: Path, fragment: str, tmp_path: Path) -> Spans:
    out = headless(f"{page.as_uri()}#{fragment}", tmp_path, "--dump-dom").stdout
    assert 'id="traj-a"' in out, out[-2000:]
    p = Spans()
    p.feed(out)
    return p


def records(run_dir: Path, step: int) -> list[dict]:
    """The log file read directly (not through rlvr), in file order = the page's indices."""
    with gzip.open(run_dir / "rollouts" / f"step_{step:06d}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """DIR (masked GRPO, 2 steps) with DIR/no_mask (the same run with observations trained)."""
    root = tmp_path_factory.mktemp("viewer_job")
    run_dir, _ = run_probe(root / "masked")
    ablation, _ = run_probe(root / "unmasked", rl={"mask_observations": False})
    shutil.move(str(ablation), str(run_dir / "no_mask"))
    return run_dir, write_page([run_dir])


def pick(recs: list[dict]) -> int:
    """A trajectory with observation tokens when there is one."""
    return next((i for i, r in enumerate(recs) if 0 in r["loss_mask"][r["prompt_len"]:]), 0)


def check_spans(spans: list[dict], rec: dict, trained_obs: bool) -> None:
    assert [s["i"] for s in spans] == list(range(len(rec["token_ids"])))
    assert [s["id"] for s in spans] == rec["token_ids"]
    assert "".join(s["text"] for s in spans) == "".join(rec["tokens"])
    for s in spans:
        i = s["i"]
        want = "prompt" if i < rec["prompt_len"] else "sampled" if rec["loss_mask"][i] else "obs"
        assert want in s["cls"] and not ({"prompt", "sampled", "obs"} - {want}) & s["cls"], (i, s)
        assert ("trained" in s["cls"]) == (want == "obs" and trained_obs), (i, s)


def test_token_spans_and_mask_classes_equal_the_trajectory_file(job, tmp_path):
    run_dir, page = job
    for step in (1, 2):
        recs, ablation = records(run_dir, step), records(run_dir / "no_mask", step)
        i = pick(recs)
        d = dom(page, f"step={step}&traj={i}", tmp_path)
        check_spans(d.spans["traj-a"], recs[i], trained_obs=False)
        # the side pane: the ablation's trajectory of the same prompt, observations trained
        task = recs[i]["task_id"]
        other = [r for r in ablation if r["task_id"] == task]
        ids = [s["id"] for s in d.spans["traj-b"]]
        match = next(r for r in other if r["token_ids"] == ids)
        check_spans(d.spans["traj-b"], match, trained_obs=True)
        assert [c["index"] for c in d.cells if c["selected"]] == [i]
        assert d.count.startswith(f"{len(recs)} of {len(recs)}")
    assert any("obs" in s["cls"] for s in d.spans["traj-a"]), "the run made no observation tokens"


def test_a_filter_narrows_the_groups_and_a_pinned_token_shows_its_numbers(job, tmp_path):
    run_dir, page = job
    recs = records(run_dir, 2)
    reason = recs[0]["finish_reason"]
    keep = [i for i, r in enumerate(recs) if r["finish_reason"] == reason]
    assert len(keep) < len(recs) or len({r["finish_reason"] for r in recs}) == 1
    r0 = recs[keep[0]]
    tok = next(j for j, m in enumerate(r0["loss_mask"]) if m)
    d = dom(page, f"step=2&finish={reason}&traj={keep[0]}&tok={tok}", tmp_path)
    assert sorted(c["index"] for c in d.cells) == keep
    assert all(c["text"].endswith(reason) for c in d.cells)
    assert d.count.startswith(f"{len(keep)} of {len(recs)}")
    check_spans(d.spans["traj-a"], r0, trained_obs=False)
    tip = d.tip["text"]
    assert not d.tip["hidden"] and f"id {r0['token_ids'][tok]}" in tip
    assert f"logprob {round(r0['logprobs'][tok], 3)}" in tip
    assert "gap" in tip and "advantage" in tip
    # a filter nothing passes: no groups, no trajectory
    d = dom(page, "step=2&rmin=99", tmp_path)
    assert d.cells == [] and "traj-a" not in d.spans and d.count.startswith("0 of")


def test_screenshot(job, tmp_path):
    run_dir, page = job
    recs = records(run_dir, 2)
    shot = tmp_path / "viewer.png"
    headless(f"{page.as_uri()}#step=2&traj={pick(recs)}", tmp_path, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000  # a blank page is ~5 kB
    if os.environ.get("RLVR_VIEWER_PNG"):
        shutil.copy(shot, os.environ["RLVR_VIEWER_PNG"])
