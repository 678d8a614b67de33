"""A run killed after a checkpoint and resumed logs the metrics an uninterrupted run logs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlvr.learners.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

ARGS = ["grpo_calculator", "--run.steps", "4", "--run.save_every", "2", "--run.progress", "false",
        "--rl.prompts_per_step", "2", "--rollout.samples_per_prompt", "4",
        "--rollout.max_new_tokens", "12", "--rollout.max_turns", "1", "--optim.micro_batch_size", "4",
        "--model.hidden_size", "32", "--model.num_layers", "1"]
# Timings differ between runs; everything else must be identical.
VOLATILE = ("time/",)


def _cmd(out, *extra):
    return [sys.executable, "-m", "rlvr", "train", *ARGS, "--output-dir", str(out), *extra]


def _env():
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _rows(path):
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd(full), check=True, env=_env(), capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while latest_checkpoint(killed) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up, as with a crash or preemption
    finally:
        proc.wait()
    ckpt = latest_checkpoint(killed)
    assert ckpt is not None and ckpt.name != "step_000004", "the run was not interrupted mid-way"

    subprocess.run(_cmd(killed, "--resume"), check=True, env=_env(), capture_output=True, timeout=300)
    a, b = _rows(full), _rows(killed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b


def test_checkpoint_roundtrip_and_atomic_listing(tmp_path, tiny_tokenizer):
    from rlvr.core.models import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    torch.manual_seed(5)
    save_checkpoint(tmp_path, 3, model=model, optimizer=opt, extra={"data_position": 12})
    (tmp_path / "checkpoints" / ".tmp-step_000009-1").mkdir()  # a write that never finished
    (tmp_path / "checkpoints" / "step_000007").mkdir()  # a directory without state.pt
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003"]
    want = torch.rand(1)  # the draw that follows the saved RNG state
    other = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=1)
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    torch.manual_seed(0)
    state = load_checkpoint(latest_checkpoint(tmp_path), model=other, optimizer=opt2)
    assert state == {"step": 3, "extra": {"data_position": 12}}
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert torch.equal(torch.rand(1), want)  # RNG restored despite manual_seed(0) before loading
    assert (tmp_path / "checkpoints" / "step_000003" / "model" / "config.json").exists()


def _saved_steps(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_a_failed_save_leaves_nothing_behind_and_the_previous_checkpoint_intact(
        tmp_path, tiny_tokenizer, monkeypatch):
    import errno

    from rlvr.learners.checkpoint import CheckpointError
    from rlvr.core.models import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    save_checkpoint(tmp_path, 1, model=model, tokenizer=tiny_tokenizer, extra={"at": 1})
    before = {p.name: p.stat().st_size for p in (tmp_path / "checkpoints" / "step_000001").rglob("*")}

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_pretrained", full_disk)
    with pytest.raises(CheckpointError, match=r"step_000002 failed.*disk holding .* is full.*"
                                              r"run\.keep_checkpoints"):
        save_checkpoint(tmp_path, 2, model=model, tokenizer=tiny_tokenizer, extra={"at": 2})
    assert _saved_steps(tmp_path) == ["step_000001"]  # no .tmp-step_000002-<pid> left

    # Re-saving the same step fails too: the old copy is replaced only by a complete new one.
    with pytest.raises(CheckpointError, match="step_000001 failed"):
        save_checkpoint(tmp_path, 1, model=model, tokenizer=tiny_tokenizer, extra={"at": 99})
    assert _saved_steps(tmp_path) == ["step_000001"]
    after = {p.name: p.stat().st_size for p in (tmp_path / "checkpoints" / "step_000001").rglob("*")}
    assert after == before
    other = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=1)
    assert load_checkpoint(latest_checkpoint(tmp_path), model=other)["extra"] == {"at": 1}

    def not_serializable(*a, **k):  # what transformers raises for a model still quantised
        raise ValueError("The model is quantized with gguf and is not serializable")

    monkeypatch.setattr(model, "save_pretrained", not_serializable)
    with pytest.raises(CheckpointError, match="cannot be serialised.*load_policy"):
        save_checkpoint(tmp_path, 3, model=model)
    assert _saved_steps(tmp_path) == ["step_000001"]


def test_a_killed_writers_temporary_directory_is_removed_by_the_next_save(tmp_path, tiny_tokenizer):
    from rlvr.core.models import build_tiny_model

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no running process
    abandoned = tmp_path / "checkpoints" / f".tmp-step_000004-{gone.pid}"
    (abandoned / "model").mkdir(parents=True)
    running = tmp_path / "checkpoints" / f".tmp-step_000006-{os.getppid()}"  # a live writer's
    running.mkdir()
    save_checkpoint(tmp_path, 5, model=build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1))
    assert not abandoned.exists() and running.exists()


def test_keep_checkpoints_deletes_all_but_the_newest(tmp_path, tiny_tokenizer):
    from rlvr.core.models import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    (tmp_path / "final").mkdir()  # an offline learner's output beside the checkpoints
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=model)  # default 0: every checkpoint stays
    assert _saved_steps(tmp_path) == ["step_000001", "step_000002", "step_000003"]
    save_checkpoint(tmp_path, 4, model=model, keep_checkpoints=2)
    assert _saved_steps(tmp_path) == ["step_000003", "step_000004"]
    # A stale newer checkpoint (an earlier run in the same directory) never costs the one just
    # written its place.
    save_checkpoint(tmp_path, 2, model=model, keep_checkpoints=1)
    assert _saved_steps(tmp_path) == ["step_000002"]
    assert (tmp_path / "final").is_dir()
    with pytest.raises(ValueError, match=r"run\.keep_checkpoints is -1"):
        save_checkpoint(tmp_path, 5, model=model, keep_checkpoints=-1)


def test_run_keep_checkpoints_is_a_setting():
    from rlvr.core.config import load_config

    assert load_config(None, ["--run.keep_checkpoints", "3"]).run.keep_checkpoints == 3


def test_save_model_dir_replaces_final_only_with_a_complete_copy(tmp_path, tiny_tokenizer, monkeypatch):
    from rlvr.learners.checkpoint import CheckpointError, save_model_dir
    from rlvr.core.models import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=0)
    save_model_dir(model, tiny_tokenizer, tmp_path / "final")
    assert (tmp_path / "final" / "config.json").exists()

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "save_pretrained", broken)
    with pytest.raises(CheckpointError, match="model directory .*final failed"):
        save_model_dir(model, tiny_tokenizer, tmp_path / "final")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert (tmp_path / "final" / "config.json").exists()


def test_a_gguf_model_checkpoints_and_resumes(tmp_path, tiny_tokenizer, monkeypatch):
    """Issue 16: every run on a .gguf model died at its final save ("not serializable")."""
    pytest.importorskip("gguf")
    from rlvr.core.config import ModelConfig
    from rlvr.core.models import build_tiny_model, load_policy, save_tiny_gguf

    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    gguf = save_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer,
                          build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1, seed=2))
    cfg = ModelConfig(name_or_path=str(gguf))
    model, tok = load_policy(cfg, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    ckpt = save_checkpoint(tmp_path / "run", 1, model=model, optimizer=opt, tokenizer=tok)
    resumed, _ = load_policy(cfg, "cpu")  # what --resume does: the policy, then the state
    load_checkpoint(ckpt, model=resumed, optimizer=torch.optim.AdamW(resumed.parameters(), lr=0.1))
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    reloaded, _ = load_policy(ModelConfig(name_or_path=str(ckpt / "model")), "cpu")
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(reloaded(ids).logits, model(ids).logits)
