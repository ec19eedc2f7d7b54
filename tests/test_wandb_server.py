"""The W&B server a command talks to: login found without prompting, and an answer or a quick error."""

from __future__ import annotations

import concurrent.futures
import http.server
import re
import socket
import threading

import pytest

from hat.wandb_server import check_server, has_login


def test_login_from_netrc_for_the_configured_server(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine wandb.example.org\n  login user\n  password " + "a" * 40 + "\n")
    netrc.chmod(0o600)
    assert has_login({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"})
    assert not has_login({"NETRC": str(netrc)})  # an entry for another server is no login for api.wandb.ai


def test_any_http_answer_means_the_server_is_there():
    """An error status still comes from a server: only no answer at all stops the command early."""

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(403)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_server(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    with pytest.raises(ConnectionError, match="no answer from the W&B server http://127.0.0.1:9 "):
        check_server("http://127.0.0.1:9")


def test_a_server_that_never_answers_is_given_up_after_the_timeout():
    # check_server runs in a thread so that a hang fails the test (the 600 s are a hang guard, not a
    # speed bound); closing the silent server then ends the thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never replies
            url = f"http://127.0.0.1:{silent.getsockname()[1]}"
            error = pool.submit(check_server, url, timeout=1).exception(timeout=600)
    assert isinstance(error, ConnectionError), error
    assert re.search(f"W&B server {url} .*timed out", str(error)), error  # its own timeout, no other failure
