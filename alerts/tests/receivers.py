"""Local stand-ins for the providers, on 127.0.0.1 only.

- `HttpReceiver`: a threaded HTTP server that records every request (method, path,
  headers, exact body bytes, arrival time) and answers from a scripted list of `Reply`s,
  then from a default. A reply can be held until an Event is set (a delivery "in
  flight"), which is how the crash tests kill a worker mid-send.
- `SmtpSink`: a real SMTP server (aiosmtpd) that records the messages it accepts, can
  refuse recipients, and can hold the next DATA answer the same way.

Fixtures: `http_receiver(*replies)` starts one (stopped after the test); `smtp_server`
starts an SMTP sink and points Django's EMAIL_* settings at it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HOLD_LIMIT_SECONDS = 120  # a held reply never outlives a broken test by much


@dataclass
class Reply:
    status: int = 200
    body: str | bytes = "ok"
    headers: dict = field(default_factory=dict)
    #: When set, the answer waits until this event is set (the request is recorded first).
    hold: threading.Event | None = None


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float
    answered: int

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class HttpReceiver:
    """A scripted HTTP endpoint; `requests` lists what arrived, in order."""

    def __init__(self, replies=(), default: Reply | None = None) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.default = default or Reply()
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            do_PUT = do_POST

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for reply in [*self.replies, self.default]:
            if reply.hold is not None:
                reply.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting and waiting ----------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def wait_for(self, count: int, timeout: float = 60) -> bool:
        """Block until `count` requests arrived (False on timeout: the test then fails)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def accepted(self) -> list[Received]:
        """Requests answered with a 2xx: what the provider took."""
        return [r for r in self.requests if 200 <= r.answered < 300]

    # -- the handler ------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._cond:
            reply = self.replies.popleft() if self.replies else self.default
            self.requests.append(
                Received(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                    at=time.time(),
                    answered=reply.status,
                )
            )
            self._cond.notify_all()
        if reply.hold is not None:
            reply.hold.wait(HOLD_LIMIT_SECONDS)
        payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client is gone (killed worker, timeout): nothing to answer
            pass


@pytest.fixture
def http_receiver():
    """http_receiver(*replies, default=Reply()) -> a started HttpReceiver."""
    started: list[HttpReceiver] = []

    def make(*replies: Reply, default: Reply | None = None) -> HttpReceiver:
        receiver = HttpReceiver(replies, default).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


# --- SMTP --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps what it accepts."""

    def __init__(self) -> None:
        self.messages: list[Mail] = []
        self.refuse_recipients: str | None = None  # e.g. "550 5.1.1 No such user"
        #: The next message's DATA answer waits until this event is set (one message only).
        self.hold: threading.Event | None = None
        self.port = free_port()
        self._cond = threading.Condition()
        self._controller = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_recipients:
            return self.refuse_recipients
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        with self._cond:
            self.messages.append(
                Mail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
            self._cond.notify_all()
        hold, self.hold = self.hold, None  # holds the next message only
        if hold is not None:
            await asyncio.get_running_loop().run_in_executor(None, hold.wait, HOLD_LIMIT_SECONDS)
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._controller is not None:
            self._controller.stop()


def use_real_smtp(settings) -> None:
    """pytest-django swaps in the locmem mail backend; these tests talk real SMTP."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


@pytest.fixture
def smtp_server(settings):
    """A running SmtpSink; Django's mail settings point at it (plain SMTP, no auth)."""
    sink = SmtpSink().start()
    use_real_smtp(settings)
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = sink.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    yield sink
    sink.stop()
