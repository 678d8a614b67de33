"""Rollout servers for real: the HF engine on the tiny model behind HTTP (in a thread, and once as
``rlvr rollout-server`` in a subprocess), compared token for token with the in-process engine."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from rlvr.engines.base import Completion, SamplingParams
from rlvr.engines.server import (RemoteEngine, RemoteEngineError, RolloutService, build_engine,
                                 running_server, shards, weight_files, weights_digest)
from rlvr.learners.dispatch import learner_for

# prompts of different lengths (left padding inside the HF engine) drawn from the tiny vocabulary
PROMPTS = [[5, 17, 42], [9], [100, 3, 77, 8, 250], [31, 31], [12, 200, 7]]
SAMPLED = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rlvr.core.models import save_tiny

    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "m", seed=0))


def local_engine(path):
    """The in-process reference: the same directory loaded the way the server loads it."""
    return build_engine("hf", path, device="cpu")


@pytest.fixture(scope="module")
def local(model_dir):
    return local_engine(model_dir)


@pytest.fixture(scope="module")
def two_servers(model_dir):
    services = [RolloutService(build_engine("hf", model_dir, device="cpu"), "hf", model_dir)
                for _ in range(2)]
    with running_server(services[0]) as a, running_server(services[1]) as b:
        yield [a, b], services


def test_health_reports_the_engine_and_the_weights(two_servers, model_dir):
    (url, _), _ = two_servers
    h = RemoteEngine([url]).health()
    assert h["status"] == "ok" and h["engine"] == "hf" and h["model"] == model_dir
    assert h["weights_version"] == 0
    assert h["weights_digest"] == weights_digest(weight_files(model_dir))


@pytest.mark.parametrize("params", [SAMPLED, GREEDY,
                                    SamplingParams(max_new_tokens=8, temperature=0.7, top_p=0.8,
                                                   seed=11, stop=["e"])], ids=["T1", "greedy", "top-p-stop"])
def test_one_server_equals_the_in_process_engine(two_servers, local, params):
    (url, _), _ = two_servers
    remote = RemoteEngine([url])
    got, want = remote.generate(PROMPTS, params), local.generate(PROMPTS, params)
    assert got == want  # token ids, logprobs (exact floats), finish reasons, stop strings
    assert all(isinstance(c, Completion) and c.token_ids for c in got)
    remote.close()


def test_two_servers_split_the_batch_and_keep_its_order(two_servers, local):
    urls, services = two_servers
    before = [s.prompts_served for s in services]
    remote = RemoteEngine(urls)
    got = remote.generate(PROMPTS, GREEDY)
    assert [s.prompts_served - b for s, b in zip(services, before)] == [3, 2]  # shards(5, 2)
    # exactly the in-process engine on the same shards ...
    assert got == local.generate(PROMPTS[:3], GREEDY) + local.generate(PROMPTS[3:], GREEDY)
    # ... and the whole batch's greedy tokens; logprobs only to float32 rounding, since a batch of
    # another size pads differently and runs other matmul shapes
    whole = local.generate(PROMPTS, GREEDY)
    assert [c.token_ids for c in got] == [c.token_ids for c in whole]
    for g, w in zip(got, whole):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-5)
    # sampled: shard k is prompts[a:b] with seed + a, on its own server
    got = remote.generate(PROMPTS, SAMPLED)
    want = (local.generate(PROMPTS[:3], SAMPLED) +
            local.generate(PROMPTS[3:], SamplingParams(max_new_tokens=8, temperature=1.0, seed=3 + 3)))
    assert got == want
    assert remote.generate([], GREEDY) == []


def test_shards_are_contiguous_and_near_equal():
    assert shards(5, 2) == [(0, 3), (3, 5)]
    assert shards(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shards(2, 4) == [(0, 1), (1, 2)]  # fewer prompts than servers: idle servers get none


def test_load_weights_from_a_saved_directory_changes_the_outputs(model_dir, tmp_path):
    from rlvr.core.models import build_tiny_model, build_tiny_tokenizer

    service = RolloutService(build_engine("hf", model_dir, device="cpu"), "hf", model_dir)
    with running_server(service) as url:
        remote = RemoteEngine([url], weights_dir=tmp_path / "push")
        before = remote.generate(PROMPTS, GREEDY)
        other = build_tiny_model(build_tiny_tokenizer(), seed=1)  # different weights, same shapes
        remote.load_weights(other)  # written under weights_dir/v1, loaded by the server
        assert (tmp_path / "push" / "v1").is_dir()
        h = remote.health()
        assert h["weights_version"] == 1 and h["weights_digest"] == remote.weights_digest
        assert remote.weights_digest == weights_digest(weight_files(tmp_path / "push" / "v1"))
        after = remote.generate(PROMPTS, GREEDY)
        assert after != before
        # the server now answers exactly as an in-process engine on the pushed weights
        from rlvr.engines.hf import HFEngine

        tokenizer = service.engine.tokenizer
        assert after == HFEngine(other, tokenizer, device="cpu").generate(PROMPTS, GREEDY)
        # a state dict goes the same way; the previous version directory is removed
        remote.load_weights(dict(build_tiny_model(build_tiny_tokenizer(), seed=0).state_dict()))
        assert remote.weights_version == 2 and not (tmp_path / "push" / "v1").exists()
        assert remote.generate(PROMPTS, GREEDY) == before  # back on the seed-0 weights
        # a directory path the server reads itself
        remote.load_weights(model_dir)
        assert remote.health()["weights_version"] == 3
        with pytest.raises(RemoteEngineError, match=r"127\.0\.0\.1.*does not exist"):
            remote.load_weights(str(tmp_path / "nowhere"))


class _Scripted:
    """An engine that answers after ``delay_s`` with one token per prompt."""

    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s

    def generate(self, prompts, params):
        time.sleep(self.delay_s)
        return [Completion([p[-1]], [-1.0], "length") for p in prompts]

    def load_weights(self, sd):
        pass

    def close(self):
        pass


def test_a_slow_server_times_out_with_its_url():
    with running_server(RolloutService(_Scripted(delay_s=1.0), "hf", "scripted")) as url:
        remote = RemoteEngine([url], timeout_s=0.2)
        with pytest.raises(RemoteEngineError, match=rf"{url}: no answer to POST /generate within 0.2 s"):
            remote.generate([[1]], GREEDY)


def test_an_unreachable_server_is_named():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteEngineError, match=rf"127.0.0.1:{port}: cannot reach it.*rollout-server"):
        RemoteEngine([f"http://127.0.0.1:{port}"], connect_timeout_s=2)


def test_bad_requests_get_422_with_a_message():
    with running_server(RolloutService(_Scripted(), "hf", "scripted")) as url:
        r = httpx.post(url + "/generate", json={"prompts": [[1]], "params": {"max_new_tokens": 0}})
        assert r.status_code == 422 and "max_new_tokens must be >= 1" in r.json()["error"]
        r = httpx.post(url + "/generate", json={"prompts": "1 2 3"})
        assert r.status_code == 422 and r.json()["error"].startswith("bad request: prompts")
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        RemoteEngine(["http://127.0.0.1:1"], check=False).generate([[1], []], GREEDY)
    with pytest.raises(ValueError, match="not an http"):
        RemoteEngine(["localhost:8100"], check=False)
    with pytest.raises(ValueError, match="weights_dir"):
        RemoteEngine(["http://127.0.0.1:1"], check=False).load_weights({})


def test_servers_that_disagree_on_the_digest_are_refused(tmp_path):
    class Pinned(RolloutService):
        def load_weights(self, path):
            return {"weights_version": 1, "weights_digest": f"sha256:{self.model}"}

    a, b = Pinned(_Scripted(), "hf", "a"), Pinned(_Scripted(), "hf", "b")
    with running_server(a) as ua, running_server(b) as ub:
        with pytest.raises(RemoteEngineError, match="disagree on its digest"):
            RemoteEngine([ua, ub]).load_weights(str(tmp_path))


@contextlib.contextmanager
def _rollout_server_process(model_dir):
    """``rlvr rollout-server --engine hf`` in its own process; yields (url, its output lines)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "rlvr", "rollout-server", "--engine", "hf",
                             "--model", model_dir, "--port", str(port), "--device", "cpu",
                             "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                RemoteEngine([url], connect_timeout_s=1)
                break
            except RemoteEngineError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError("rollout-server did not come up:\n" + "".join(lines))
                time.sleep(0.3)
        yield url, lines
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_rollout_server_command_serves_the_in_process_tokens(model_dir, local):
    with _rollout_server_process(model_dir) as (url, lines):
        assert RemoteEngine([url]).generate(PROMPTS, SAMPLED) == local.generate(PROMPTS, SAMPLED)
        assert any("serving hf rollouts" in line for line in lines)


def test_rlvr_train_through_two_rollout_server_processes(model_dir, tmp_path):
    """The command line end to end: two ``rlvr rollout-server`` processes generate every step's
    rollouts for ``rlvr train``; the weight-sync probe agrees with the trainer after every push."""
    with _rollout_server_process(model_dir) as (a, _), _rollout_server_process(model_dir) as (b, _):
        out = tmp_path / "run"
        res = subprocess.run([sys.executable, "-m", "rlvr", "train", "grpo_calculator",
                              "--model.name_or_path", model_dir, "--output-dir", str(out),
                              "--run.steps", "2", "--run.progress", "false",
                              "--rl.prompts_per_step", "2", "--rollout.samples_per_prompt", "4",
                              "--rollout.servers", f"[{a},{b}]"],
                             capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        assert res.returncode == 0, res.stderr[-3000:]
        health = [RemoteEngine([u]).health() for u in (a, b)]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["sync/probe_gap"] < 1e-4 for r in rows)  # the servers hold the trained weights
    assert rows[-1]["train/logprob_gap"] < 1e-4
    assert [h["weights_version"] for h in health] == [3, 3]  # the start and one push per step


def test_make_engine_with_servers_is_a_remote_engine(tmp_path):
    from rlvr.core.config import RolloutConfig
    from rlvr.engines.factory import make_engine

    with running_server(RolloutService(_Scripted(), "hf", "scripted")) as url:
        cfg = RolloutConfig(servers=[url], server_timeout_s=5.0)
        engine = make_engine("hf", None, None, rollout=cfg, weights_dir=str(tmp_path))
        assert isinstance(engine, RemoteEngine) and engine.weights_dir == tmp_path
        assert engine.generate([[4, 9]], GREEDY)[0].token_ids == [9]  # the scripted echo
        cfg.weights_dir = str(tmp_path / "shared")
        assert make_engine("hf", None, None, rollout=cfg).weights_dir == tmp_path / "shared"


def test_grpo_trains_through_two_rollout_servers_with_verified_weights(model_dir, tmp_path):
    """``rollout.servers``: every step's rollouts come from two servers, rank 0 pushes the new
    weights after each update, and the weight-sync probe and the logprob gap show the servers
    generate with the policy being trained."""
    from rlvr.core.config import load_config

    services = [RolloutService(build_engine("hf", model_dir, device="cpu"), "hf", model_dir)
                for _ in range(2)]
    with running_server(services[0]) as a, running_server(services[1]) as b:
        cfg = load_config("grpo_calculator", [
            "--model.name_or_path", model_dir, "--data.train", "calculator", "--run.steps", "2",
            "--run.progress", "false",
            "--run.output_dir", str(tmp_path / "run"), "--rl.prompts_per_step", "2",
            "--rollout.samples_per_prompt", "4", "--rollout.servers", f"[{a},{b}]"])
        report = learner_for("grpo")(cfg)
        health = [RemoteEngine([u]).health() for u in (a, b)]
    assert report["final"]["train/optimizer_steps"] == 1
    assert report["final"]["train/logprob_gap"] < 1e-4  # the servers sampled with the trainer's weights
    # the start and one push per step; both servers hold the same weights
    assert [h["weights_version"] for h in health] == [3, 3]
    assert health[0]["weights_digest"] == health[1]["weights_digest"]
