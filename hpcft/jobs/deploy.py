"""The deploy stage: prepare the weights, serve them, publish the endpoint, stop after eval.

The server is the framework's own OpenAI-compatible API. Its address is written to
`<run>/deploy/endpoint.json` once it answers; the eval job writes `<run>/deploy/stop` when
it has ended (not when it is requeued), and then the server is stopped (unless
`keep_serving`). An eval that ends without saying so (cancelled, killed, its disk full) is
seen leaving the queue (`hpcft.jobs.evalwatch`) and the server is stopped too, releasing its
GPUs before the deploy's time limit. A server shared by a sweep's points
(`DeployJob.published`) does the same in every point's run directory, and stops when every
point's eval is done.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hpcft.jobs.deploy_checkpoints import served_checkpoints, with_checkpoints
from hpcft.jobs.evalwatch import EvalWatch
from hpcft.jobs.process import resolve
from hpcft.jobs.spec import DeployJob
from hpcft.rundir import RunLayout, write_atomic, write_json_atomic

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where Linux keeps the ports it hands to outgoing connections."""
LOWEST_SERVER_PORT = 20000
"""Servers' ports are drawn from here up to the ephemeral range (above the well-known and
most services' registered ports)."""


def ephemeral_ports() -> range:
    """The ports the kernel may give any outgoing connection (Linux's default where unread)."""
    try:
        low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port(tries: int = 50) -> int:
    """A port free now, below the ephemeral range where one exists. A server binds its port
    only after loading its model (seconds to minutes), and a port the kernel handed out
    (bind to 0) can meanwhile be given to any outgoing connection on the node, an eval's
    requests included: a sweep's deploy lost its port so ("address already in use")."""
    ephemeral = ephemeral_ports()
    candidates = range(LOWEST_SERVER_PORT, max(LOWEST_SERVER_PORT, ephemeral.start))
    for port in random.sample(candidates, min(tries, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("", 0))
        kernel_port: int = s.getsockname()[1]
        return kernel_port


def node_address() -> str:
    """The name other nodes reach this one by: Slurm's node name, else loopback (local runs)."""
    return os.environ.get("SLURMD_NODENAME") or "127.0.0.1"


def bind_host() -> str:
    """Where the server listens: every interface of a compute node (eval runs on another
    node), only loopback for a run on this machine."""
    return "0.0.0.0" if os.environ.get("SLURMD_NODENAME") else "127.0.0.1"


def new_api_key(layout: RunLayout, key: str | None = None) -> str:
    """A random key for this run's server (or the shared server's `key`), in a file only its
    owner can read (created so, never widened); clients read it from there, so it is in no
    script, record or log."""
    key = key or secrets.token_urlsafe(32)
    path = layout.api_key
    # The submit makes deploy/ only where a deploy job is planned; a train job serving in
    # its own allocation (deploy.placement=after_train) writes here first.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


STILL_STARTING = frozenset({404, 408, 429})
"""Client errors a starting server may answer (its routes or models not there yet, busy)."""


def answers(url: str, api_key: str, probe: dict[str, object] | None) -> bool:
    """The server answers `url` (a GET), or a real request (`probe`, POSTed): an engine can
    list its models and still fail on the first request."""
    data = json.dumps(probe).encode() if probe else None
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {api_key}"})
    if data:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError as e:
        if 400 <= e.code < 500 and e.code not in STILL_STARTING:  # up, and it will refuse the eval too
            reason = " ".join(e.read(400).decode(errors="replace").split())
            raise RuntimeError(f"the server refused the request to {url} (HTTP {e.code}): {reason}") from None
        return False
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(
    process: subprocess.Popen[bytes], url: str, job: DeployJob, api_key: str, model: str, weights: Path | None = None
) -> None:
    """Until the server answers; `job.ready_timeout_s` runs from when the file `weights` (the
    server's word that it prepared them) exists, or at once without one."""
    timeout_s = job.ready_timeout_s
    deadline = None if weights else time.monotonic() + timeout_s
    probe = {**job.ready_probe, "model": model} if job.ready_probe else None
    while not answers(url, api_key, probe):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before answering {url}")
        if deadline is None and weights and weights.exists():
            deadline = time.monotonic() + timeout_s
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer {url} within {timeout_s} s")
        time.sleep(1)


def filled(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def start_server(job: DeployJob, argv: list[str], model_name: str, port: int, api_key: str) -> subprocess.Popen[bytes]:
    """The server command with its address filled in, and its environment with the address,
    model name and key where the adapter's contract for that server puts them."""
    address = {"{host}": bind_host(), "{port}": str(port)}
    env = {k: filled(v, {**address, "{model}": model_name, "{api_key}": api_key}) for k, v in job.env.items()}
    return subprocess.Popen(resolve([filled(a, address) for a in argv]), env={**os.environ, **env})


def endpoint_record(
    job: DeployJob, layout: RunLayout, urls: list[str], port: int, model_name: str | None = None
) -> dict[str, Any]:
    """What `endpoint.json` says: where the fine-tuned model (and its base) answer, and the
    file with the key (not the key)."""
    key_file = str(layout.api_key)
    model = model_name or job.model_name
    endpoint: dict[str, Any] = {"base_url": urls[0] + "/v1", "model": model, "api_key_file": key_file}
    endpoint.update(node=node_address(), port=port, **job.endpoint_extra)
    if job.baseline_model_name:  # on its own server, or beside the fine-tuned model on the same one
        url = urls[1] if len(urls) > 1 else urls[0]
        endpoint["baseline"] = {"base_url": url + "/v1", "model": job.baseline_model_name, "api_key_file": key_file}
    return endpoint


def serve(job: DeployJob, layout: RunLayout) -> None:
    """Start the server (and the base model's, when eval scores it too), publish the
    endpoint once every one answers, and serve until eval says stop."""
    api_key, checkpoints = new_api_key(layout), served_checkpoints(job)
    servers = [(job.model_name, with_checkpoints(job, job.serve_argv, checkpoints), job.port or free_port())]
    if job.baseline_argv:
        servers.append((job.baseline_model_name, job.baseline_argv, free_port()))
    weights = Path(job.weights_ready) if job.weights_ready else None
    if weights:  # an earlier attempt's word is not this one's
        weights.unlink(missing_ok=True)
    processes = [start_server(job, argv, name, port, api_key) for name, argv, port in servers]
    urls = [f"http://{node_address()}:{port}" for _, _, port in servers]
    try:
        for i, (process, url, (name, _, _)) in enumerate(zip(processes, urls, servers, strict=True)):
            wait_ready(process, url + job.ready_path, job, api_key, name, weights if i == 0 else None)
        record = endpoint_record(job, layout, urls, servers[0][2])
        write_json_atomic(layout.endpoint, {**record, "checkpoints": checkpoints} if job.checkpoints else record)
        served = [record, *([record["baseline"]] if "baseline" in record else []), *checkpoints]
        names = [side["model"] for side in served]
        print(f"hpcft deploy: serving {', '.join(names)} at {', '.join(urls)}", flush=True)
        wait_for_evals(processes, [layout], job.keep_serving)
    finally:
        for process in processes:
            stop(process)
        retire_endpoint(layout)


def retire_endpoint(layout: RunLayout) -> None:
    """The server has stopped: its `endpoint.json` says so (`"stopped": true`), so that an eval
    started later (a requeue, a rerun) waits for the next server instead of calling a dead
    address. A record that cannot be rewritten (a full disk) is removed instead."""
    try:
        record = json.loads(layout.endpoint.read_text())
        write_json_atomic(layout.endpoint, {**record, "stopped": True})
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        layout.endpoint.unlink(missing_ok=True)


def clear_markers(layout: RunLayout) -> None:
    """Markers of an earlier attempt (a requeue, a rerun) would stop this server at once or
    send eval to a dead address."""
    for stale in (layout.stop_serving, layout.deploy_failed, layout.endpoint):
        stale.unlink(missing_ok=True)


def serve_shared(job: DeployJob) -> str:
    """One server for a sweep's points: every point whose training left weights is served
    (its part of the command spliced in for `{models}`) and gets its endpoint; a point
    without them is told at once. Serves until every served point's eval is done."""
    points = [(p, RunLayout(Path(p.run_dir))) for p in job.published]
    for _, layout in points:
        clear_markers(layout)
    served = [(p, layout) for p, layout in points if Path(p.weights).exists()]
    for p, layout in points:
        if (p, layout) not in served:
            write_atomic(layout.deploy_failed, f"its training left no weights at {p.weights}\n")
    try:
        if not served:
            raise RuntimeError("no point of the sweep left weights to serve")
        key = new_api_key(served[0][1])
        for _, layout in served[1:]:
            new_api_key(layout, key)
        models = [arg for p, _ in served for arg in p.args]
        argv = [m for a in job.serve_argv for m in (models if a == "{models}" else [a])]
        port = job.port or free_port()
        process = start_server(job, argv, served[0][0].model_name, port, key)
        try:
            url = f"http://{node_address()}:{port}"
            wait_ready(process, url + job.ready_path, job, key, served[0][0].model_name)
            for p, layout in served:
                write_json_atomic(layout.endpoint, endpoint_record(job, layout, [url], port, p.model_name))
            print(f"hpcft deploy: serving {', '.join(p.model_name for p, _ in served)} at {url}", flush=True)
            wait_for_evals([process], [layout for _, layout in served], job.keep_serving)
        finally:
            stop(process)
            for _, layout in served:
                retire_endpoint(layout)
    except BaseException as e:
        for _, layout in served:
            write_atomic(layout.deploy_failed, f"{type(e).__name__}: {e}\n")
        raise
    return f"deploy finished: {len(served)} of {len(points)} points served"


def wait_for_evals(processes: list[subprocess.Popen[bytes]], layouts: list[RunLayout], keep_serving: bool) -> None:
    """Serve until the eval of every run has ended (said stop, or left the queue); raise if a
    server exits first. `keep_serving`: until the time limit or `scancel`."""
    watch = EvalWatch(layouts)
    while all(p.poll() is None for p in processes):
        if not keep_serving:
            watch.look()
            if all(watch.done(layout) for layout in layouts):
                what = "every eval is" if len(layouts) > 1 else "eval is"
                print(f"hpcft deploy: {what} done, stopping the server", flush=True)
                return
        time.sleep(2)
    codes = [p.returncode for p in processes if p.poll() is not None]
    raise RuntimeError(f"the server exited with status {codes[0]} while serving")


def run_deploy(job: DeployJob) -> str:
    if job.published:
        return serve_shared(job)
    layout = RunLayout(Path(job.run_dir))
    clear_markers(layout)
    try:
        serve(job, layout)
    except BaseException as e:
        # Tell the eval job at once instead of letting it wait for an endpoint that never comes.
        write_atomic(layout.deploy_failed, f"{type(e).__name__}: {e}\n")
        raise
    return f"deploy finished: {layout.endpoint}"
