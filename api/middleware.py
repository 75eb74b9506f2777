"""ASGI middleware: request body size limit (413) and request logging."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

log = logging.getLogger("api.access")


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse bodies over `limit` bytes with 413, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is over the limit of {self.limit:,} bytes"
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error_response(413, message)(scope, receive, send)
            return
        received = 0
        exceeded = answered = False

        async def limited() -> Message:
            nonlocal received, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise BodyTooLarge
            return msg

        async def watch(msg: Message) -> None:
            # once over the limit, whatever the app answers (a parse error) becomes 413
            nonlocal answered
            if not exceeded:
                answered = answered or msg["type"] == "http.response.start"
                await send(msg)
            elif msg["type"] == "http.response.start" and not answered:
                answered = True
                await error_response(413, message)(scope, receive, send)

        try:
            await self.app(scope, limited, watch)
        except BodyTooLarge:
            if not answered:
                await error_response(413, message)(scope, receive, send)


class RequestLog:
    """One log line per request: method, path, status, time, key name, request id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode(
            "latin-1")[:64] or uuid.uuid4().hex[:16]
        status = {"code": 500}

        async def stamp(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = [*msg["headers"], (b"x-request-id", request_id.encode())]
            await send(msg)

        try:
            await self.app(scope, receive, stamp)
        finally:
            key = getattr(scope.get("state", {}).get("key"), "name", "-") \
                if isinstance(scope.get("state"), dict) else "-"
            log.info("%s %s %d %.1fms key=%s id=%s", scope["method"], scope["path"],
                     status["code"], (time.perf_counter() - start) * 1000, key, request_id)
