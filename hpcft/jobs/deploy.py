"""The deploy stage: prepare the weights, serve them, publish the endpoint, stop after eval.

The server is the framework's own OpenAI-compatible API. Its address is written to
`<run>/deploy/endpoint.json` once it answers; the eval job writes `<run>/deploy/stop` when
it is done, and then the server is stopped (unless `keep_serving`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from hpcft.jobs.process import resolve
from hpcft.jobs.spec import DeployJob
from hpcft.rundir import RunLayout, write_atomic, write_json_atomic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def node_address() -> str:
    """The name other nodes reach this one by: Slurm's node name, else loopback (local runs)."""
    return os.environ.get("SLURMD_NODENAME") or "127.0.0.1"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bool(r.status == 200)
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


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout_s: int) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before answering {url}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer {url} within {timeout_s} s")
        time.sleep(1)


def start_server(job: DeployJob, argv: list[str], model_name: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **job.env, "API_HOST": "0.0.0.0", "API_PORT": str(port), "API_MODEL_NAME": model_name}
    return subprocess.Popen(resolve(argv), env=env)


def serve(job: DeployJob, layout: RunLayout) -> None:
    """Start the server (and the base model's, when eval scores it too), publish the
    endpoint once every one answers, and serve until eval says stop."""
    servers = [(job.model_name, job.serve_argv, job.port or free_port())]
    if job.baseline_argv:
        servers.append((job.baseline_model_name, job.baseline_argv, free_port()))
    processes = [start_server(job, argv, name, port) for name, argv, port in servers]
    urls = [f"http://{node_address()}:{port}" for _, _, port in servers]
    try:
        for process, url in zip(processes, urls, strict=True):
            wait_ready(process, url + job.ready_path, job.ready_timeout_s)
        endpoint: dict[str, object] = {"base_url": urls[0] + "/v1", "model": job.model_name}
        endpoint.update(node=node_address(), port=servers[0][2], **job.endpoint_extra)
        if len(servers) > 1:
            endpoint["baseline"] = {"base_url": urls[1] + "/v1", "model": job.baseline_model_name}
        write_json_atomic(layout.endpoint, endpoint)
        print(f"hpcft deploy: serving {', '.join(s[0] for s in servers)} at {', '.join(urls)}", flush=True)
        while all(p.poll() is None for p in processes):
            if layout.stop_serving.exists() and not job.keep_serving:
                print("hpcft deploy: eval is done, stopping the server", flush=True)
                return
            time.sleep(2)
        codes = [p.returncode for p in processes if p.poll() is not None]
        raise RuntimeError(f"the server exited with status {codes[0]} while serving")
    finally:
        for process in processes:
            stop(process)


def run_deploy(job: DeployJob) -> str:
    layout = RunLayout(Path(job.run_dir))
    # Markers of an earlier attempt (a requeue, a rerun) would stop this server at once or
    # send eval to a dead address.
    for stale in (layout.stop_serving, layout.deploy_failed, layout.endpoint):
        stale.unlink(missing_ok=True)
    try:
        if job.export_argv:
            print(f"hpcft deploy: {job.export_argv}", flush=True)
            subprocess.run(resolve(job.export_argv), check=True, env={**os.environ, **job.env})
        serve(job, layout)
    except BaseException as e:
        # Tell the eval job at once instead of letting it wait for an endpoint that never comes.
        write_atomic(layout.deploy_failed, f"{type(e).__name__}: {e}\n")
        raise
    return f"deploy finished: {layout.endpoint}"
