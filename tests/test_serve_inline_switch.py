"""``[server] inline_authz``: on (the default), authz answered from memory is sent from
waitress's I/O thread; off, every request goes through the thread pool, with the same bytes.

Real servers on loopback, built by ``make_app_server`` exactly as ``authctl serve`` builds them.
"""

from __future__ import annotations

import logging
import socket
import threading
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.core.config import load_config
from server.core.errors import ConfigError
from server.serve import waitress_adapter
from server.serve.httpd import make_app_server
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import BASE_CONFIG
from tests.conftest import Clock
from tests.test_inline import _answers
from tests.test_inline import _request
from tests.test_inline import _without_date
from tests.test_inline import decision_log_level

pytestmark = pytest.mark.slow


def _with_switch(text: str, value: str) -> str:
    return text.replace("[server]\n", f"[server]\ninline_authz = {value}\n", 1)


def test_the_switch_is_on_by_default_and_read(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    assert load_config(path).server.inline_authz is True
    path.write_text(_with_switch(BASE_CONFIG, "false"), encoding="utf-8")
    assert load_config(path).server.inline_authz is False
    path.write_text(_with_switch(BASE_CONFIG, '"no"'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.inline_authz"):
        load_config(path)


@contextmanager
def serving(harness: Harness) -> Iterator[tuple[int, list[int]]]:
    """``harness.app`` behind ``make_app_server`` on a free port; the port, and a list that
    grows by one for each request answered in the I/O thread."""
    inline: list[int] = []
    decide = harness.app.decide_inline

    def counted(environ: dict[str, t.Any]) -> t.Any:
        reply = decide(environ)
        inline.extend([1] if reply is not None else [])
        return reply

    harness.app.decide_inline = counted  # type: ignore[method-assign]
    server = make_app_server(harness.app, harness.config, {"host": "127.0.0.1", "port": 0})
    stopped = threading.Event()
    loop = threading.Thread(target=waitress_adapter.run_until, args=(server, stopped))
    loop.start()
    try:
        yield server.effective_port, inline
    finally:
        waitress_adapter.stop_loop(server, stopped)
        loop.join(10)
        assert waitress_adapter.shut_down(server)


def _exchange(port: int, raw: bytes, answers: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        data = b""
        while len(_answers(data)) < answers:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_off_answers_everything_through_the_pool_with_the_same_bytes(tmp_path: Path) -> None:
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on = build(tmp_path / "on", Clock(), users_interval=3600)
    off = build(
        tmp_path / "off",
        Clock(),
        config_text=_with_switch(APP_CONFIG, "false"),
        users_interval=3600,
    )
    assert on.config.server.inline_authz
    assert not off.config.server.inline_authz
    got: dict[bool, bytes] = {}
    with decision_log_level(logging.WARNING):  # nothing logged: every answer may be inline
        for harness in (on, off):
            cookie = harness.login()
            raw = (
                _request(cookie=cookie)  # 200 with the Remote-* headers
                + _request()  # 302
                + _request(extra="X-Requested-With: XMLHttpRequest\r\n")  # 401
                + _request("/no-such-page")  # 404, the pool either way
                + _request(cookie=cookie, method="HEAD")
            )
            with serving(harness) as (port, inline):
                data = _exchange(port, raw, answers=5)
                warm = _exchange(port, _request(cookie=cookie), answers=1)
            assert [status for status, _, _ in _answers(data)] == [200, 302, 401, 404, 200]
            assert [status for status, _, _ in _answers(warm)] == [200]
            # the session ids differ between the two apps: compare what does not name them
            got[harness.config.server.inline_authz] = _without_date(data).replace(
                cookie.encode(), b"<cookie>"
            )
            if harness is on:
                assert len(inline) >= 4  # 200, 302, 401, HEAD (and the warm 200)
            else:
                assert inline == []  # the pool answered everything
    assert got[True] == got[False]
