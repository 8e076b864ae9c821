"""LLaMA-Factory's API server (`llamafactory-cli api`) behind the run's key on every route.

    python -m hpcft.serve_llamafactory <run>/native/api.yaml

The same app `llamafactory-cli api` serves (`create_app`, its routes and its own `API_KEY`
check), with what that command lacks: its key check covers `/v1/*` only, not FastAPI's
`/docs`, `/redoc` and `/openapi.json`, and an unset `API_KEY` leaves every route open. Here
`hpcft.keyguard.RequireKey` asks every route for the key but `GET /health` (added: 200, empty),
the server will not start without a key, and uvicorn's access log, which prints each query
string, is off. Reads `API_HOST`, `API_PORT`, `API_MODEL_NAME` and `API_KEY` as LLaMA-Factory does.

    python -m hpcft.serve_llamafactory api.yaml --export export.yaml --export-done FILE

first merges a LoRA adapter as `llamafactory-cli export export.yaml` does (its own
`export_model`, reading the file as its command line would), then writes FILE and serves:
one interpreter and one import of LLaMA-Factory (~8 s of CPU) instead of two.

    python -m hpcft.serve_llamafactory api.yaml --base NAME api_base.yaml

serves the base model too, in the same process, under NAME: one LLaMA-Factory app per model
behind `hpcft.model_router.ByModel`, which sends each request to the model it names, so eval
scores the base beside the fine-tuned model through one address (as vLLM serves an adapter
beside its base) at the cost of one interpreter, not two.
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path
from typing import Any

from hpcft.keyguard import HEALTH_PATH, RequireKey
from hpcft.model_router import ByModel

DEFAULT_NAME = "gpt-3.5-turbo"
"""The name LLaMA-Factory serves its model under without `API_MODEL_NAME`."""


def guarded_app(models: dict[str, dict[str, Any]], key: str) -> Any:
    """LLaMA-Factory's app for each model (served name -> its api.yaml's keys), guarded: one
    model's app as `llamafactory-cli api` serves it, several behind `ByModel`."""
    from fastapi import Response
    from llamafactory.api.app import create_app
    from llamafactory.chat import ChatModel

    apps = {name: create_app(ChatModel(settings)) for name, settings in models.items()}
    if len(apps) > 1:
        return RequireKey(ByModel(apps), key=key)
    (app,) = apps.values()
    app.add_api_route(HEALTH_PATH, lambda: Response(status_code=200), methods=["GET"], include_in_schema=False)
    app.add_middleware(RequireKey, key=key)
    return app


def export_weights(export_yaml: str, done: str) -> None:
    """`llamafactory-cli export export_yaml`, in this process; then `done` says it finished."""
    import sys

    from llamafactory.train.tuner import export_model

    command_line = sys.argv
    sys.argv = ["llamafactory-cli", export_yaml]  # where export_model reads its file, as the CLI leaves it
    try:
        export_model()
    finally:
        sys.argv = command_line
    gc.collect()  # the merge's copy of the model, before the server loads the merged one
    Path(done).write_text("")


def read_settings(api_yaml: str) -> dict[str, Any]:
    import yaml

    with open(api_yaml, encoding="utf-8") as f:
        settings: dict[str, Any] = yaml.safe_load(f)
    return settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LLaMA-Factory's API server, every route behind API_KEY.")
    parser.add_argument("config", help="the api.yaml the deploy stage wrote (LLaMA-Factory's inference arguments)")
    parser.add_argument("--export", metavar="EXPORT_YAML", help="first merge as `llamafactory-cli export` does")
    parser.add_argument("--export-done", metavar="FILE", help="written once the export has finished")
    parser.add_argument(
        "--base", nargs=2, metavar=("NAME", "API_YAML"), help="also serve this model (the base), under NAME"
    )
    args = parser.parse_args(argv)
    if bool(args.export) != bool(args.export_done):
        parser.error("--export and --export-done go together")
    if not os.environ.get("API_KEY"):  # before loading the model
        parser.error("API_KEY is not set: every request but the health check must carry the run's key")
    if args.base and args.base[0] == os.environ.get("API_MODEL_NAME", DEFAULT_NAME):
        parser.error(f"--base {args.base[0]}: the name API_MODEL_NAME gives the first model")
    return args


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    if args.export:
        export_weights(args.export, args.export_done)
    models = {os.environ.get("API_MODEL_NAME", DEFAULT_NAME): read_settings(args.config)}
    if args.base:
        models[args.base[0]] = read_settings(args.base[1])
    host, port = os.environ.get("API_HOST", "127.0.0.1"), int(os.environ.get("API_PORT", "8000"))
    for name, settings in models.items():
        path = settings.get("model_name_or_path")
        print(f"hpcft serve: LLaMA-Factory's API for {path} as {name} on {host}:{port}", flush=True)
    uvicorn.run(guarded_app(models, os.environ["API_KEY"]), host=host, port=port, access_log=False)


if __name__ == "__main__":
    main()
