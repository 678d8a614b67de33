"""``rlvr view`` without a browser: the page embeds a real run's logged trajectories, needs nothing
from the network, survives hostile text, pairs DIR with DIR/no_mask, reads an evaluation
directory, refuses a directory with nothing to show, and serves on loopback."""

import json
import re
import threading
import urllib.error
import urllib.request

import pytest

from rlvr.rollout import log as rollout_log
from rlvr.cli import main
from rlvr.core.types import Trajectory
from rlvr.viewer import build_page, load_run, write_page
from test_rollout_log import tiny_run  # noqa: F401 (the shared 2-step run)


def page_data(html: str) -> dict:
    m = re.search(r'<script id="rlvr-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no data element"
    return json.loads(m.group(1))


def test_rlvr_view_writes_a_page_holding_the_run(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    out = tmp_path / "v.html"
    assert main(["view", str(run_dir), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    data = page_data(html)
    [run] = data["runs"]
    logged = rollout_log.read_run(run_dir)
    assert sorted(run["steps"]) == ["1", "2"]
    for k, recs in run["steps"].items():
        assert [r["token_ids"] for r in recs] == [r["token_ids"] for r in logged[int(k)]]
        assert [r["loss_mask"] for r in recs] == [r["loss_mask"] for r in logged[int(k)]]
    assert [m["step"] for m in run["metrics"]] == [1, 2] and "reward/mean" in run["metrics"][0]
    # offline: no script, stylesheet or image is fetched from anywhere
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', html)
    assert "http://" not in html.split('id="rlvr-data"')[0] and "https://" not in html


def test_hostile_token_text_cannot_end_the_data_element(tmp_path, tiny_tokenizer):
    t = Trajectory.from_prompt(tiny_tokenizer.encode("</script><script>alert(1)</script><!--"),
                               group_id="g", task_id="x:0")
    t.append_sampled(tiny_tokenizer.encode("</script>"), [-1.0] * len(tiny_tokenizer.encode("</script>")))
    rollout_log.EvalRolloutLog(tmp_path, tiny_tokenizer)("d", [], [t])
    html = build_page([load_run(tmp_path)])
    assert html.count("</script>") == 2  # the data element's and the code's, nothing from the data
    rec = page_data(html)["runs"][0]["steps"]["eval"][0]
    assert "".join(rec["tokens"]).startswith("</script><script>alert(1)")


def test_default_compare_is_the_no_mask_ablation(tiny_run, tmp_path):
    import shutil

    run_dir, _ = tiny_run
    job = tmp_path / "job"
    shutil.copytree(run_dir, job)
    shutil.copytree(run_dir, job / "no_mask")
    data = page_data((write_page([job])).read_text())
    assert [r["name"] for r in data["runs"]] == ["job", "job/no_mask"]
    assert (job / "view.html").exists()


def test_an_eval_directory_and_a_directory_with_nothing(tmp_path, tiny_tokenizer):
    with pytest.raises(FileNotFoundError, match="neither metrics.jsonl nor rollouts"):
        load_run(tmp_path)
    t = Trajectory.from_prompt(tiny_tokenizer.encode("Q"), group_id="g", task_id="nq:0")
    t.append_sampled([5], [-0.5])
    rollout_log.EvalRolloutLog(tmp_path, tiny_tokenizer)("nq", [], [t])
    (tmp_path / "report.json").write_text(json.dumps({"average": {"em": 0.25, "n": 4}}))
    run = load_run(tmp_path)
    assert list(run["steps"]) == ["eval"] and run["summary"] == {"em": 0.25, "n": 4}


def test_max_steps_keeps_the_first_and_last_evenly(tmp_path, tiny_tokenizer):
    t = Trajectory.from_prompt([1, 2], group_id="g")
    for step in range(1, 11):
        rollout_log.write_records(rollout_log.step_file(tmp_path, step),
                                  [rollout_log.trajectory_record(t, tiny_tokenizer, step=step)])
    assert list(load_run(tmp_path, max_steps=4)["steps"]) == ["1", "4", "7", "10"]
    assert list(load_run(tmp_path, max_steps=1)["steps"]) == ["10"]


def test_serve_answers_the_page_on_loopback_only(tiny_run, tmp_path):
    from rlvr.cli.view_cmd import serve

    run_dir, _ = tiny_run
    page = write_page([run_dir], tmp_path / "view.html")
    server = serve(page, 0)
    host, port = server.server_address
    assert host == "127.0.0.1" and port > 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        assert body == page.read_bytes()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/../config.yaml", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_rlvr_eval_logs_its_rollouts_and_the_viewer_reads_the_directory(tmp_path):
    from rlvr.core.models import save_tiny

    model_dir = save_tiny(tmp_path / "model", hidden_size=32, num_layers=1)
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps({"question": q, "golden_answers": a}) + "\n" for q, a in [
        ("capital of France?", ["Paris"]), ("who wrote Hamlet?", ["Shakespeare"])]))
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model_dir), "--env", "search_direct", "--data", str(data),
            "--output-dir", str(out), "--max-new-tokens", "8", "--max-total-tokens", "512",
            "--max-turns", "1", "--batch-size", "1", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    recs = rollout_log.read_run(out)[None]
    assert [r["task_id"] for r in recs] == [p["id"] for p in preds] == ["mini:0", "mini:1"]
    for r, p in zip(recs, preds):  # the same episode: its completion text, segment by segment
        assert r["dataset"] == "mini" and r["advantages"] is None
        assert "".join(s["text"] for s in r["segments"] if s["kind"] != "prompt") == p["trajectory"]
    assert main(argv + ["--overwrite"]) == 0  # a fresh evaluation starts a fresh log
    assert len(rollout_log.read_run(out)[None]) == 2
    assert main(["view", str(out)]) == 0
    run = page_data((out / "view.html").read_text())["runs"][0]
    assert list(run["steps"]) == ["eval"] and "em" in run["summary"]
