"""The app behind the proxies in the e2e suite: it answers every request with what it received.

The suite's security checks are about what reaches the app (``Remote-User`` from authctl, never
from the client), so the app must show the raw header lines exactly as the proxy sent them,
names and duplicates included; a WSGI server would fold ``Remote_User`` into
``HTTP_REMOTE_USER`` and hide the difference. Standard library only.

Run: ``python echo_backend.py [PORT]``; prints ``echo listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    """Answers any method with JSON: ``{"method", "path", "headers": [[name, value], ...]}``."""

    protocol_version = "HTTP/1.1"  # keep-alive, which nginx's upstream pool expects
    disable_nagle_algorithm = True  # headers and body go out as one segment, no 40 ms stall

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[name, value] for name, value in self.headers.items()],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: the suite reads the answers, not a log."""


class Server(ThreadingHTTPServer):
    """A threading server with a backlog that survives a burst of proxy connections."""

    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    """Serve on 127.0.0.1 and the port given (0: any free one) until killed."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = Server(("127.0.0.1", port), EchoHandler)
    print(f"echo listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
