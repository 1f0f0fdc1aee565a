"""`--serve`'s checks on each request, without a browser: another site's page (Origin), a name that is not
this machine (Host, against DNS rebinding) and a request without the server's token are refused on every route
that reaches the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import CookieJar, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from gembatch.tui.serve import NO_TOKEN, TabServer

TOKEN = "test-token-not-a-secret"


def request(path: str, host: str, origin: str | None = None) -> web.Request:
    headers = {"Host": host} if origin is None else {"Host": host, "Origin": origin}
    return make_mocked_request("GET", path, headers=headers)


@pytest.mark.parametrize(("host", "origin"), [
    ("127.0.0.1:8000", None),
    ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("localhost:8000", "http://LOCALHOST:8000"),
    ("[::1]:8000", "http://[::1]:8000"),
    ("localhost", "http://localhost"),  # an SSH tunnel on port 80
])
def test_a_page_of_this_machine_is_served(host: str, origin: str | None) -> None:
    assert TabServer("true", "127.0.0.1", 8000).refusal(request("/", host, origin)) is None


@pytest.mark.parametrize(("host", "origin", "reason"), [
    ("127.0.0.1:8000", "http://attacker.example", "a page of http://attacker.example may not open this app"),
    ("127.0.0.1:8000", "null", "a page of null may not open this app"),
    ("127.0.0.1:8000", "http://127.0.0.1:9000", "a page of http://127.0.0.1:9000 may not open this app"),
    ("attacker.example:8000", None, "this server answers only to localhost, not to 'attacker.example'"),
    ("attacker.example:8000", "http://attacker.example:8000",
     "this server answers only to localhost, not to 'attacker.example'"),
    ("127.0.0.1.attacker.example:8000", None,
     "this server answers only to localhost, not to '127.0.0.1.attacker.example'"),
])
def test_another_site_or_another_name_is_refused(host: str, origin: str | None, reason: str) -> None:
    assert TabServer("true", "127.0.0.1", 8000).refusal(request("/ws", host, origin)) == reason


def test_an_open_host_answers_to_any_name_but_still_checks_the_origin() -> None:
    server = TabServer("true", "0.0.0.0", 8000)
    assert server.refusal(request("/", "box.lan:8000", "http://box.lan:8000")) is None
    assert server.refusal(request("/ws", "box.lan:8000", "http://attacker.example")) == (
        "a page of http://attacker.example may not open this app")


async def test_a_download_is_refused_like_the_page() -> None:
    server = TabServer("true", "127.0.0.1", 8000, token=TOKEN)
    with pytest.raises(web.HTTPForbidden):
        await server.handle_download(request(f"/download/k?token={TOKEN}", "attacker.example:8000"))
    with pytest.raises(web.HTTPNotFound):  # this machine's name, the token: on to textual-serve, which has no such
        await server.handle_download(make_mocked_request("GET", f"/download/k?token={TOKEN}",
                                                         headers={"Host": "127.0.0.1:8000"}, match_info={"key": "k"}))


def test_each_server_draws_its_own_long_token() -> None:
    first, second = TabServer("true", "127.0.0.1", 8000), TabServer("true", "127.0.0.1", 8000)
    assert first.token != second.token
    assert len(first.token) >= 40
    assert first.token not in first.command  # the tabs' apps never get it (their command line, their logs)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    server = TabServer("true", "127.0.0.1", 8000, token=TOKEN)
    # unsafe: aiohttp's client keeps no cookie of an IP address (127.0.0.1) otherwise; a browser does
    async with TestClient(TestServer(await server._make_app()), cookie_jar=CookieJar(unsafe=True)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/", "/?token=wrong", "/?token=", f"/?token={TOKEN}x", "/ws", "/ws?token=wrong",
                                  "/download/k", "/download/k?token=wrong"])
async def test_without_the_token_every_route_is_refused_with_where_to_find_it(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 403
    assert await response.text() == f"gembatch-tui: {NO_TOKEN}\n"
    assert "Set-Cookie" not in response.headers


async def test_the_token_in_the_url_opens_the_page_and_leaves_a_strict_http_only_cookie(client: TestClient) -> None:
    response = await client.get(f"/?token={TOKEN}")
    assert response.status == 200
    assert "textual-terminal" in await response.text()
    cookie = response.headers["Set-Cookie"]
    name = f"gembatch-serve-{client.port}"  # the port the browser used
    assert cookie.startswith(f"{name}={TOKEN};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert response.headers["Referrer-Policy"] == "no-referrer"

    # A reload, and the page's own requests, carry only the cookie.
    reload = await client.get("/")
    assert reload.status == 200
    assert "textual-terminal" in await reload.text()
    missing = await client.get("/download/k")
    assert missing.status == 404  # past the token check: textual-serve has no such download


async def test_a_wrong_cookie_is_refused(client: TestClient) -> None:
    response = await client.get("/", cookies={f"gembatch-serve-{client.port}": "wrong"})
    assert response.status == 403
    assert await response.text() == f"gembatch-tui: {NO_TOKEN}\n"


async def test_the_cookie_of_another_port_is_not_this_servers(client: TestClient) -> None:
    response = await client.get("/", cookies={f"gembatch-serve-{client.port + 1}": TOKEN})
    assert response.status == 403
