"""hpcft.model_router.ByModel in front of real FastAPI apps (the kind LLaMA-Factory's
`create_app` makes), driven through Starlette's own test client: each request reaches the
app of the model it names, with its body intact; each app's lifespan runs. The real
LLaMA-Factory server with its base beside it: tests/integration/test_server_keys.py, and the
pipelines whose eval scores the base (the quick start's gain needs the base's own answers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

fastapi = pytest.importorskip("fastapi")
testclient = pytest.importorskip("starlette.testclient")

from hpcft.keyguard import RequireKey  # noqa: E402
from hpcft.model_router import ByModel  # noqa: E402


def echo_app(name: str, events: list[str]) -> Any:
    """An app that answers with its name and the body it got, and logs its lifespan."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        events.append(f"{name} up")
        yield
        events.append(f"{name} down")

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: fastapi.Request) -> dict[str, Any]:
        return {"served_by": name, "body": (await request.body()).decode()}

    @app.get("/v1/other")
    async def other() -> dict[str, str]:
        return {"served_by": name}

    return app


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def client(events: list[str]) -> Any:
    router = ByModel({"m-ft": echo_app("ft", events), "m-base": echo_app("base", events)})
    with testclient.TestClient(router) as client:
        yield client


def test_each_request_reaches_the_app_of_the_model_it_names_with_its_body_intact(client):
    for name, app in (("m-base", "base"), ("m-ft", "ft")):
        body = {"model": name, "messages": [{"role": "user", "content": "é " * 5000}], "max_tokens": 3}
        answer = client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200 and answer.json()["served_by"] == app
        assert json.loads(answer.json()["body"]) == body


def test_a_name_not_served_is_404_and_reaches_no_app(client):
    answer = client.post("/v1/chat/completions", json={"model": "m-typo", "messages": []})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found" and "m-typo" in answer.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"model": 7}', b'{"messages": []}'])
def test_a_body_that_names_no_model_goes_to_the_first_app(client, body):
    answer = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.json() == {"served_by": "ft", "body": body.decode()}  # which answers it (422 for LLaMA-Factory)


def test_models_lists_every_name_health_answers_and_other_routes_go_to_the_first(client):
    listed = client.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["m-ft", "m-base"] and listed["object"] == "list"
    assert client.get("/health").status_code == 200
    assert client.get("/v1/other").json() == {"served_by": "ft"}


def test_every_apps_lifespan_runs_up_in_order_and_down_in_reverse(events):
    router = ByModel({"m-ft": echo_app("ft", events), "m-base": echo_app("base", events)})
    with testclient.TestClient(router):
        assert events == ["ft up", "base up"]
    assert events == ["ft up", "base up", "base down", "ft down"]


def test_behind_the_key_guard_every_route_but_health_needs_the_key(events):
    router = RequireKey(ByModel({"m-ft": echo_app("ft", events), "m-base": echo_app("base", events)}), key="k")
    with testclient.TestClient(router) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models").status_code == 401
        assert client.post("/v1/chat/completions", json={"model": "m-base"}).status_code == 401
        ok = client.post("/v1/chat/completions", json={"model": "m-base"}, headers={"Authorization": "Bearer k"})
        assert ok.json()["served_by"] == "base"


def test_the_base_may_not_take_the_fine_tuned_models_name(monkeypatch, capsys):
    from hpcft.serve_llamafactory import parse_args

    monkeypatch.setenv("API_KEY", "k")
    monkeypatch.setenv("API_MODEL_NAME", "m-ft")
    assert parse_args(["api.yaml", "--base", "m-base", "api_base.yaml"]).base == ["m-base", "api_base.yaml"]
    with pytest.raises(SystemExit) as refused:
        parse_args(["api.yaml", "--base", "m-ft", "api_base.yaml"])
    assert refused.value.code == 2 and "--base m-ft: the name API_MODEL_NAME gives" in capsys.readouterr().err
