#!/usr/bin/env python3
"""Interop: the official Python SDK (`mcp` on PyPI) as a client of mcp-proxy
serving the `everything` example server.

    python py_sdk.py --base http://127.0.0.1:PORT

Suites, one line per check ("PASS name" / "FAIL name: reason"):
- py-sdk/streamable: ClientSession over streamable_http_client with the
  initialize handshake (session era): tools/list, echo, progress callback,
  sampling callback, DELETE on close and the session gone afterwards (404).
- py-sdk/sse-2024-11-05: ClientSession over sse_client: tools/list, echo.
- py-sdk/client-auto: the high-level Client in its default "auto" mode,
  which probes server/discover: the proxy must offer 2026-07-28 and serve
  tools/list, echo and progress statelessly, and subscriptions/listen
  (tools list_changed; resource updates, which need the proxy to subscribe
  the 2025-era child to the resource).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
from mcp import Client, ClientSession, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

CHECK_SECONDS = 20
SAMPLED = "sampled by the Python SDK callback"
INFO = types.Implementation(name="mcp-sidecar-interop-py", version="1.0.0")
failed = 0


async def check(name: str, fn: Callable[[], Awaitable[Any]], seconds: float = CHECK_SECONDS) -> Any:
    """Runs one check with a time limit; prints PASS or FAIL. Returns its value, or None on failure."""
    global failed
    try:
        with anyio.fail_after(seconds):
            value = await fn()
        print(f"PASS {name}", flush=True)
        return True if value is None else value
    except BaseException as e:  # noqa: BLE001 - every failure is reported, including timeouts and groups
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        failed += 1
        if isinstance(e, TimeoutError):
            reason = f"no answer within {seconds} s"
        else:
            lines = traceback.format_exception_only(type(e), e)
            reason = " | ".join(part.strip() for line in lines for part in line.splitlines() if part.strip())[:400]
        print(f"FAIL {name}: {reason}", flush=True)
        return None


def skipped(name: str, why: str) -> None:
    global failed
    failed += 1
    print(f"FAIL {name}: not run ({why})", flush=True)


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def text_of(result: Any) -> str | None:
    for block in getattr(result, "content", None) or []:
        if getattr(block, "type", None) == "text":
            return block.text
    return None


async def sampling_callback(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    content = params.messages[0].content
    prompt = getattr(content, "text", None)
    return types.CreateMessageResult(
        role="assistant",
        model="interop-test-model",
        stop_reason="endTurn",
        content=types.TextContent(type="text", text=f"{SAMPLED}: {prompt}"),
    )


async def streamable(base: str, label: str) -> None:
    s = f"{label}/streamable"
    url = f"{base}/mcp"
    seen_ids: list[str] = []

    async def remember_session(response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid and sid not in seen_ids:
            seen_ids.append(sid)

    http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(30, read=300), event_hooks={"response": [remember_session]}
    )
    rest = ["tools-list", "echo", "progress", "sampling", "terminate"]
    negotiated: list[str] = []
    async with http:
        try:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write, sampling_callback=sampling_callback, client_info=INFO) as session:

                    async def initialize() -> None:
                        result = await session.initialize()
                        negotiated.append(result.protocol_version)
                        expect(result.server_info.name != "", "no serverInfo")
                        expect(len(seen_ids) == 1, f"session ids seen: {seen_ids}")

                    if not await check(f"{s}/initialize", initialize):
                        for c in rest:
                            skipped(f"{s}/{c}", "initialize failed")
                        return

                    async def tools_list() -> None:
                        names = [t.name for t in (await session.list_tools()).tools]
                        for n in ("echo", "progress", "sample"):
                            expect(n in names, f"tool {n} missing from {names}")

                    await check(f"{s}/tools-list", tools_list)

                    async def echo() -> None:
                        r = await session.call_tool("echo", {"message": "héllo from Python ✓"})
                        expect(not r.is_error and text_of(r) == "héllo from Python ✓", f"echo returned {r}")

                    await check(f"{s}/echo", echo)

                    async def progress() -> None:
                        seen: list[tuple[float, float | None]] = []

                        async def on_progress(p: float, total: float | None, message: str | None) -> None:
                            seen.append((p, total))

                        r = await session.call_tool(
                            "progress", {"steps": 4, "delay_ms": 20}, progress_callback=on_progress
                        )
                        expect(not r.is_error, f"progress returned {r}")
                        expect(seen == [(1, 4), (2, 4), (3, 4), (4, 4)], f"progress notifications: {seen}")

                    await check(f"{s}/progress", progress)

                    async def sampling() -> None:
                        r = await session.call_tool("sample", {"prompt": "say hi"})
                        expect(not r.is_error and text_of(r) == f"{SAMPLED}: say hi", f"sample returned {r}")

                    await check(f"{s}/sampling", sampling)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            skipped(f"{s}/transport", f"the transport failed: {e!r}"[:300])

        async def terminate() -> None:
            # Leaving streamable_http_client sent DELETE; the session must be gone now.
            expect(len(seen_ids) == 1, f"session ids seen: {seen_ids}")
            r = await http.post(
                url,
                headers={
                    "accept": "application/json, text/event-stream",
                    "mcp-session-id": seen_ids[0],
                    "mcp-protocol-version": negotiated[0] if negotiated else "2025-11-25",
                },
                json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"},
            )
            expect(r.status_code == 404, f"POST with the closed session id answered {r.status_code}, want 404")

        await check(f"{s}/terminate", terminate)


async def legacy_sse(base: str, label: str) -> None:
    s = f"{label}/sse-2024-11-05"
    try:
        async with sse_client(f"{base}/sse", timeout=10) as (read, write):
            async with ClientSession(read, write, client_info=INFO) as session:
                if not await check(f"{s}/initialize", session.initialize):
                    skipped(f"{s}/tools-list", "initialize failed")
                    skipped(f"{s}/echo", "initialize failed")
                    return

                async def tools_list() -> None:
                    names = [t.name for t in (await session.list_tools()).tools]
                    expect("echo" in names, f"no echo in {names}")

                await check(f"{s}/tools-list", tools_list)

                async def echo() -> None:
                    r = await session.call_tool("echo", {"message": "over legacy SSE"})
                    expect(text_of(r) == "over legacy SSE", f"echo returned {r}")

                await check(f"{s}/echo", echo)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        skipped(f"{s}/transport", f"the transport failed: {e!r}"[:300])


async def client_auto(base: str, label: str) -> None:
    s = f"{label}/client-auto"
    try:
        async with Client(f"{base}/mcp", client_info=INFO, cache=None) as client:

            async def era() -> None:
                v = client.session.protocol_version
                expect(v == "2026-07-28", f"auto mode negotiated {v!r}, want 2026-07-28")

            await check(f"{s}/negotiates-2026-07-28", era)

            async def tools_list() -> None:
                names = [t.name for t in (await client.list_tools()).tools]
                expect("echo" in names, f"no echo in {names}")

            await check(f"{s}/tools-list", tools_list)

            async def echo() -> None:
                r = await client.call_tool("echo", {"message": "stateless ✓"})
                expect(text_of(r) == "stateless ✓", f"echo returned {r}")

            await check(f"{s}/echo", echo)

            async def progress() -> None:
                seen: list[float] = []

                async def on_progress(p: float, total: float | None, message: str | None) -> None:
                    seen.append(p)

                r = await client.call_tool("progress", {"steps": 3, "delay_ms": 20}, progress_callback=on_progress)
                expect(not r.is_error, f"progress returned {r}")
                expect(seen == [1, 2, 3], f"progress notifications: {seen}")

            await check(f"{s}/progress", progress)

            async def listen_tools_changed() -> None:
                # subscriptions/listen: the proxy serves it from the child's notifications.
                async with client.listen(tools_list_changed=True) as sub:
                    r = await client.call_tool("notify", {"method": "notifications/tools/list_changed"})
                    expect(text_of(r) == "ok", f"notify returned {r}")
                    with anyio.fail_after(5):
                        event = await sub.__anext__()
                    expect(type(event).__name__ == "ToolsListChanged", f"listen yielded {event!r}")

            await check(f"{s}/listen-tools-list-changed", listen_tools_changed)

            async def listen_resource_updated() -> None:
                async with client.listen(resource_subscriptions=["demo://a"]) as sub:
                    r = await client.call_tool("touch", {"uri": "demo://a"})
                    expect(text_of(r) == "sent", f"touch returned {text_of(r)!r}: the child was not subscribed to demo://a")
                    with anyio.fail_after(5):
                        event = await sub.__anext__()
                    expect(getattr(event, "uri", None) == "demo://a", f"listen yielded {event!r}")

            await check(f"{s}/listen-resource-updated", listen_resource_updated)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        skipped(f"{s}/connect", f"the client failed: {e!r}"[:300])


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default="http://127.0.0.1:8080")
    p.add_argument("--label", default="py-sdk")
    a = p.parse_args()
    base = a.base.rstrip("/")
    await streamable(base, a.label)
    await legacy_sse(base, a.label)
    await client_auto(base, a.label)


if __name__ == "__main__":
    anyio.run(main)
    sys.exit(0 if failed == 0 else 1)
