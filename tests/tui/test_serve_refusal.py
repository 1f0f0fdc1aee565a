"""`--serve`'s checks on each request, without a browser: another site's page (Origin) and a name that is not
this machine (Host, against DNS rebinding) are refused on every route that reaches the app."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from gembatch.tui.serve import TabServer


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
    server = TabServer("true", "127.0.0.1", 8000)
    with pytest.raises(web.HTTPForbidden):
        await server.handle_download(request("/download/k", "attacker.example:8000"))
    with pytest.raises(web.HTTPNotFound):  # this machine's name: on to textual-serve, which has no such download
        await server.handle_download(make_mocked_request("GET", "/download/k", headers={"Host": "127.0.0.1:8000"},
                                                         match_info={"key": "k"}))
