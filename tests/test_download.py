"""Downloads: an overall deadline (a server that trickles bytes or says nothing is given up on, in
one line naming the URL, the bytes received and the time), its setting, and the progress bar."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import sys
import threading

import pytest

from vaelab.data.download import (
    DEADLINE_ENV,
    DEFAULT_DEADLINE_S,
    Remote,
    download_deadline,
    download_files,
)
from vaelab.errors import VaelabError

BODY = bytes(range(256)) + bytes(144)  # 400 bytes


def remote_of(body: bytes) -> Remote:
    return Remote(hashlib.sha256(body).hexdigest(), len(body))


@pytest.fixture
def slow_server():
    """A server on loopback that answers every GET with BODY's length, then sends it one byte per
    `pause` seconds (or, with pause None, nothing at all); yields a function of the pause that
    returns the server's URL."""
    stop = threading.Event()
    pause: list[float | None] = [None]

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            try:
                for index in range(len(BODY)):
                    if pause[0] is None:
                        stop.wait(30)
                        return
                    self.wfile.write(BODY[index : index + 1])
                    if stop.wait(pause[0]):
                        return
            except OSError:  # the client gave up
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(every: float | None) -> str:
        pause[0] = every
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    stop.set()
    server.shutdown()
    server.server_close()


class TestDeadline:
    def test_a_trickling_server_is_given_up_at_the_deadline(self, slow_server, tmp_path,
                                                            monkeypatch):  # fmt: skip
        monkeypatch.setenv(DEADLINE_ENV, "0.5")
        url = slow_server(0.05)  # 400 bytes would take 20 s
        with pytest.raises(VaelabError) as info:
            download_files(tmp_path / "cache", {"data.bin": remote_of(BODY)}, url)
        message = str(info.value)
        assert message.startswith(f"{url}data.bin: download stopped at the 0.5 s deadline after ")
        received = re.search(r"after ([\d,]+) of 400 bytes in [\d.]+ s; ", message)
        assert received is not None and int(received.group(1).replace(",", "")) < len(BODY)
        assert f"set {DEADLINE_ENV} to more seconds" in message and "\n" not in message
        assert list((tmp_path / "cache").iterdir()) == []  # nothing kept, not even a part

    def test_a_silent_server_is_given_up_within_the_deadline(self, slow_server, tmp_path,
                                                             monkeypatch):  # fmt: skip
        monkeypatch.setenv(DEADLINE_ENV, "0.5")
        url = slow_server(None)
        with pytest.raises(VaelabError) as info:
            download_files(tmp_path / "cache", {"data.bin": remote_of(BODY)}, url, title="mnist")
        message = str(info.value)
        assert re.match(
            rf"mnist was not found locally and downloading {re.escape(url)}data\.bin failed "
            r"after 0 of 400 bytes in [\d.]+ s \(timed out\)\. put its files in ",
            message,
        ), message
        assert list((tmp_path / "cache").iterdir()) == []

    def test_a_download_within_the_deadline_is_kept(self, file_server, tmp_path, monkeypatch):
        served, url = file_server
        (served / "data.bin").write_bytes(BODY)
        monkeypatch.setenv(DEADLINE_ENV, "60")
        target = download_files(tmp_path / "cache", {"data.bin": remote_of(BODY)}, url)
        assert (target / "data.bin").read_bytes() == BODY


class TestDeadlineSetting:
    def test_the_default_is_half_an_hour(self, monkeypatch):
        monkeypatch.delenv(DEADLINE_ENV, raising=False)
        assert download_deadline() == DEFAULT_DEADLINE_S == 1800

    def test_seconds_may_be_a_fraction(self, monkeypatch):
        monkeypatch.setenv(DEADLINE_ENV, " 2.5 ")
        assert download_deadline() == 2.5

    @pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf", "1e9"])
    def test_a_value_that_is_not_a_bounded_number_of_seconds_is_refused(self, value, monkeypatch):
        monkeypatch.setenv(DEADLINE_ENV, value)
        with pytest.raises(VaelabError, match=rf"^{DEADLINE_ENV} must be a number of seconds "):
            download_deadline()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    def test_a_terminal_shows_each_files_bar(self, file_server, tmp_path, monkeypatch):
        served, url = file_server
        (served / "data.bin").write_bytes(BODY)
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        download_files(tmp_path / "cache", {"data.bin": remote_of(BODY)}, url)
        assert "downloading data.bin" in terminal.getvalue()

    def test_no_bar_when_stderr_is_not_a_terminal(self, file_server, tmp_path, capsys):
        served, url = file_server
        (served / "data.bin").write_bytes(BODY)
        download_files(tmp_path / "cache", {"data.bin": remote_of(BODY)}, url)
        assert capsys.readouterr().err == ""
