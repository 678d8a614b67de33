"""Rollout servers: an Engine behind HTTP (``rlvr rollout-server``), and :class:`RemoteEngine`, the
Engine that spreads each batch over several of them and puts the answers back in order.

The wire protocol is rlvr's own, token ids both ways (nothing is decoded in transit):

    POST /generate      {"prompts": [[id, ...], ...],
                         "params": {"max_new_tokens": 64, "temperature": 1.0, "top_p": 1.0,
                                    "stop": ["</search>"], "seed": 7}}
      → {"completions": [{"token_ids": [...], "logprobs": [...], "finish_reason": "eos",
                          "stop_string": null}, ...]}             one per prompt, in order
    POST /load_weights  {"path": "/shared/run/engine_weights/v3"}  a directory every server reads
      → {"weights_version": 3, "weights_digest": "sha256:…"}
    GET  /health        → {"status": "ok", "engine": "hf", "model": "...", "weights_version": 0,
                           "weights_digest": "sha256:…" | null, "prompts_served": 0}

Errors come back as ``{"error": "..."}``: 422 for a request of the wrong shape or values, 500 when
the engine fails. ``weights_digest`` is the SHA-256 of the weight files loaded (names and bytes,
in name order), so servers that loaded the same directory report the same digest whatever engine
they run; the client checks that they agree. JSON carries Python floats exactly (``repr``
round-trips), so logprobs arrive bit-identical to the engine's.

Requests run one at a time under a lock (an engine is not re-entrant); the client sends one
request per server per batch. With one server and one seed the tokens equal the in-process
engine's; with N, shard ``k`` (prompts ``start_k ...``) gets seed ``seed + start_k`` — with vLLM
inside (one seed per request) every prompt then keeps seed ``seed + i`` however the batch is cut.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import BaseModel, Field

from rlvr.core.config import ModelConfig
from rlvr.core.models import load_policy, pick_device
from rlvr.engines.base import Completion, SamplingParams
from rlvr.engines.hf import HFEngine

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RemoteEngineError(RuntimeError):
    """A rollout server could not be reached, timed out, or answered an error; names the server."""


# -- weights on disk ----------------------------------------------------------------------------

def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint directory (``*.safetensors``, else ``pytorch_model*.bin``)."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"weights directory {p} does not exist (or is not a directory)")
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{p} holds no *.safetensors or pytorch_model*.bin weight files")
    return files


def weights_digest(files: list[Path]) -> str:
    """SHA-256 over each file's name and bytes, in the order given."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_weights(files: list[Path]) -> dict:
    """A state dict (CPU tensors) from weight files."""
    import torch

    sd: dict = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd.update(load_file(str(f)))
        else:
            sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def with_tied(model, sd: dict) -> dict:
    """``sd`` plus the keys ``save_pretrained`` leaves out because they share storage with one it
    kept (a tied ``lm_head.weight``), so a strict ``load_state_dict`` takes it."""
    groups: dict[int, list[str]] = {}
    for name, t in model.state_dict().items():
        groups.setdefault(t.data_ptr(), []).append(name)
    out = dict(sd)
    for names in groups.values():
        have = [n for n in names if n in out]
        for n in names:
            if n not in out and have:
                out[n] = out[have[0]]
    return out


# -- the server ---------------------------------------------------------------------------------

class Params(BaseModel):
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = Field(default_factory=list)
    seed: Optional[int] = None


class GenerateRequest(BaseModel):
    prompts: list[list[int]]
    params: Params = Field(default_factory=Params)


class LoadRequest(BaseModel):
    path: str


def build_engine(kind: str, model_path: str, *, device: str = "auto", dtype: str = "float32",
                 **vllm_options):
    """The engine a server runs: ``hf`` (transformers, ``device``) or ``vllm`` (its own GPU)."""
    if kind == "hf":
        dev = pick_device(device, field="--device")
        model, tokenizer = load_policy(ModelConfig(name_or_path=model_path, dtype=dtype), dev)
        return HFEngine(model.eval(), tokenizer, device=dev)
    if kind == "vllm":
        from rlvr.engines.vllm import VLLMEngine

        # the server owns its GPU: nothing to give back between batches
        return VLLMEngine(model_path, dtype="auto" if dtype == "float32" else dtype, sleep=False,
                          **vllm_options)
    raise ValueError(f"--engine {kind!r} is not hf or vllm")


class RolloutService:
    """What a server does, without HTTP: one engine, the weights it holds, one request at a time."""

    def __init__(self, engine, kind: str, model: str) -> None:
        self.engine, self.kind, self.model = engine, kind, model
        self.lock = threading.Lock()
        self.weights_version = 0
        self.prompts_served = 0
        try:
            self.weights_digest: str | None = weights_digest(weight_files(model))
        except FileNotFoundError:  # a hub id: no local files to hash
            self.weights_digest = None

    def generate(self, req: GenerateRequest) -> list[dict]:
        params = SamplingParams(**req.params.model_dump())  # ValueError → 422
        with self.lock:
            outs = self.engine.generate(req.prompts, params)
            self.prompts_served += len(req.prompts)
        return [{"token_ids": c.token_ids, "logprobs": c.logprobs, "finish_reason": c.finish_reason,
                 "stop_string": c.stop_string} for c in outs]

    def load_weights(self, path: str) -> dict:
        files = weight_files(path)
        sd = read_weights(files)
        with self.lock:
            model = getattr(self.engine, "model", None)
            if model is not None and hasattr(model, "state_dict"):  # HF: strict, with tied keys
                sd = with_tied(model, sd)
                missing = sorted(set(model.state_dict()) - set(sd))
                unexpected = sorted(set(sd) - set(model.state_dict()))
                if missing or unexpected:
                    raise ValueError(f"{path} does not fit the served model: missing {missing[:3]}, "
                                     f"unexpected {unexpected[:3]}")
            self.engine.load_weights(sd)
            self.weights_version += 1
            self.weights_digest = weights_digest(files)
        log.info("loaded weights version %d from %s (%s)", self.weights_version, path,
                 self.weights_digest)
        return {"weights_version": self.weights_version, "weights_digest": self.weights_digest}

    def health(self) -> dict:
        return {"status": "ok", "engine": self.kind, "model": self.model,
                "weights_version": self.weights_version, "weights_digest": self.weights_digest,
                "prompts_served": self.prompts_served}


def create_app(service: RolloutService):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="rlvr rollout server", version="1")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: "
                 f"{e.get('msg', 'invalid')}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"error": "bad request: " + "; ".join(parts)})

    def _call(fn, *args):
        try:
            return fn(*args)
        except (ValueError, FileNotFoundError) as e:
            return JSONResponse(status_code=422, content={"error": str(e)})
        except Exception as e:  # the engine failed: say how, keep serving
            log.exception("rollout server request failed")
            return JSONResponse(status_code=500, content={"error": f"{type(e).__name__}: {e}"})

    @app.get("/health")
    def health():
        return service.health()

    @app.post("/generate")
    def generate(req: GenerateRequest):
        out = _call(service.generate, req)
        return out if isinstance(out, JSONResponse) else {"completions": out}

    @app.post("/load_weights")
    def load_weights(req: LoadRequest):
        return _call(service.load_weights, req.path)

    return app


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY (inherited by accepted connections on Linux): without
    it a keep-alive client waits ~40 ms per request on Nagle and delayed ACKs."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def _server(service: RolloutService, host: str, port: int, log_level: str):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port,
                                         log_level=log_level, access_log=False))


def serve(service: RolloutService, host: str = "127.0.0.1", port: int = 8100, *,
          log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    if host not in LOOPBACK:
        log.warning("rollout server listening on %s: reachable from other machines; it has no "
                    "authentication and loads any weights path it is sent", host)
    sock = _listen(host, port)
    try:
        _server(service, host, port, log_level).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def running_server(service: RolloutService, host: str = "127.0.0.1", port: int = 0,
                   log_level: str = "warning") -> Iterator[str]:
    """Serve from a background thread; yields the base URL (port 0 = a free one), stops on exit."""
    sock = _listen(host, port)
    server = _server(service, host, sock.getsockname()[1], log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):  # ≤ 10 s to come up
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.02)
        if not server.started:
            raise RuntimeError("rollout server did not start")
        yield f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- the client ---------------------------------------------------------------------------------

def shards(n: int, k: int) -> list[tuple[int, int]]:
    """``[start, end)`` of ``n`` prompts cut into at most ``k`` contiguous, near-equal parts."""
    k = max(1, min(k, n))
    q, r = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        end = start + q + (i < r)
        bounds.append((start, end))
        start = end
    return bounds


class RemoteEngine:
    """The Engine protocol over rollout servers. ``weights_dir`` (a directory every server can
    read) is where :meth:`load_weights` writes the trainer's weights before the servers load them."""

    def __init__(self, urls: list[str], *, timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 weights_dir: str | Path | None = None, check: bool = True) -> None:
        import httpx

        if not urls:
            raise ValueError("rollout.servers is empty: give the URL of at least one rlvr rollout-server")
        bad = [u for u in urls if not str(u).startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"rollout.servers: {bad[0]!r} is not an http:// or https:// URL")
        self.urls = [str(u).rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=len(self.urls))
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.weights_version = 0
        self.weights_digest: str | None = None
        self.servers = [self.health(u) for u in self.urls] if check else []

    def _request(self, url: str, method: str, path: str, payload: Any = None) -> Any:
        import httpx

        where = f"rollout server {url}"
        try:
            r = self._http.request(method, url + path, json=payload)
        except httpx.TimeoutException:
            raise RemoteEngineError(f"{where}: no answer to {method} {path} within "
                                    f"{self.timeout_s:g} s (rollout.server_timeout_s)") from None
        except httpx.TransportError as e:
            raise RemoteEngineError(f"{where}: cannot reach it for {method} {path} ({e}); is "
                                    f"`rlvr rollout-server` running there?") from None
        try:
            body = r.json()
        except ValueError:
            raise RemoteEngineError(f"{where}: {method} {path} answered {r.status_code} with a "
                                    f"body that is not JSON: {r.text[:200]!r}") from None
        if r.status_code >= 400:
            msg = body.get("error", body) if isinstance(body, dict) else body
            raise RemoteEngineError(f"{where}: {method} {path} failed ({r.status_code}): {msg}")
        return body

    def health(self, url: str | None = None) -> dict:
        return self._request(url or self.urls[0], "GET", "/health")

    def _fan_out(self, calls: list[tuple[str, str, str, Any]]) -> list[Any]:
        futures = [self._pool.submit(self._request, *c) for c in calls]
        return [f.result() for f in futures]  # the first failure raises, naming its server

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} has no tokens")
        if not prompts:
            return []
        calls = []
        for url, (a, b) in zip(self.urls, shards(len(prompts), len(self.urls))):
            wire = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                    "top_p": params.top_p, "stop": list(params.stop),
                    "seed": None if params.seed is None else params.seed + a}
            calls.append((url, "POST", "/generate", {"prompts": [list(p) for p in prompts[a:b]],
                                                     "params": wire}))
        out: list[Completion] = []
        for (url, _, _, payload), body in zip(calls, self._fan_out(calls)):
            out.extend(_parse_completions(body, len(payload["prompts"]), f"rollout server {url}"))
        return out

    def load_weights(self, model_or_state_dict_or_path) -> None:
        """Make every server load new weights: a directory path they all read, or a model / state
        dict, which is first written under ``weights_dir`` (``v<N>/``, the previous one removed)."""
        src = model_or_state_dict_or_path
        if isinstance(src, (str, Path)):
            path, written = Path(src), None
        else:
            if self.weights_dir is None:
                raise ValueError("RemoteEngine.load_weights of a model needs weights_dir "
                                 "(rollout.weights_dir): a directory every server can read")
            path = written = self.weights_dir / f"v{self.weights_version + 1}"
            save_weights(src, path)
        answers = self._fan_out([(u, "POST", "/load_weights", {"path": str(path)}) for u in self.urls])
        digests = {a.get("weights_digest") for a in answers}
        if len(digests) != 1:
            seen = ", ".join(f"{u}: {a.get('weights_digest')}" for u, a in zip(self.urls, answers))
            raise RemoteEngineError(f"rollout servers loaded {path} but disagree on its digest "
                                    f"({seen}): is the directory shared by all of them?")
        old = self.weights_dir / f"v{self.weights_version}" if self.weights_dir else None
        self.weights_version += 1
        self.weights_digest = digests.pop()
        if written is not None and old is not None and old.is_dir() and old != written:
            import shutil

            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()


def save_weights(model_or_state_dict, path: Path) -> None:
    """Write weights as a checkpoint directory the servers read: ``save_pretrained`` for a model
    (tied weights once), ``model.safetensors`` for a state dict. Written beside ``path`` and
    renamed into place, so a server never reads half a file."""
    import shutil

    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(model_or_state_dict, "merge_and_unload"):
        raise ValueError("rollout servers load whole models: merge the LoRA adapter before pushing")
    if hasattr(model_or_state_dict, "save_pretrained"):
        model_or_state_dict.save_pretrained(tmp, safe_serialization=True)
    else:
        from safetensors.torch import save_file

        from rlvr.engines.vllm import named_tensors

        # clone: save_file refuses tensors that share storage
        save_file({n: t.cpu().contiguous().clone() for n, t in named_tensors(model_or_state_dict)},
                  str(tmp / "model.safetensors"))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _parse_completions(body: Any, n: int, where: str) -> list[Completion]:
    items = body.get("completions") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != n:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise RemoteEngineError(f"{where}: expected {n} completions, got {got}")
    out = []
    for i, c in enumerate(items):
        try:
            comp = Completion([int(t) for t in c["token_ids"]], [float(x) for x in c["logprobs"]],
                              str(c["finish_reason"]), c.get("stop_string"))
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteEngineError(f"{where}: completion {i} is malformed ({e!r})") from None
        if len(comp.token_ids) != len(comp.logprobs):
            raise RemoteEngineError(f"{where}: completion {i} has {len(comp.token_ids)} tokens but "
                                    f"{len(comp.logprobs)} logprobs")
        out.append(comp)
    return out
