"""Load for bench/callgrind.sh: SESSIONS sessions x CONNS keep-alive
connections, each making CALLS sequential `tools/call echo` requests
(2025-11-25), every answer checked. Answers come as JSON, or on an SSE
stream when ACCEPT=sse is set (the `Accept` the SDKs send). With
ERA=modern the calls are 2026-07-28 ones (no session: SESSIONS only
multiplies the connections; the version and capabilities in `_meta`, the
`Mcp-Method` and `Mcp-Name` headers).

    python3 bench/callgrind_drive.py PORT CALLS SESSIONS CONNS
"""
import http.client
import json
import os
import sys
import threading

PORT, CALLS, SESSIONS, CONNS = (int(a) for a in sys.argv[1:5])
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
SSE = os.environ.get("ACCEPT") == "sse"
if SSE:
    HEADERS["Accept"] = "application/json, text/event-stream"
MODERN = os.environ.get("ERA") == "modern"
if MODERN:
    HEADERS.update({
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    })
next_id = [1000]
lock = threading.Lock()
failures = []


def post(conn, body, session=None):
    headers = dict(HEADERS)
    if session:
        headers["Mcp-Session-Id"] = session
    conn.request("POST", "/mcp", body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.getheader("Content-Type", "").startswith("text/event-stream"):
        # The one message of a POST's stream: its `data:` lines.
        data = b"\n".join(
            line[5:].lstrip() for line in data.split(b"\n") if line.startswith(b"data:")
        )
    return r, data


def open_session():
    if MODERN:
        return None
    c = http.client.HTTPConnection("127.0.0.1", PORT)
    r, _ = post(c, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "callgrind-drive", "version": "1"}}})
    session = r.getheader("Mcp-Session-Id")
    post(c, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    return session


def calls(session):
    c = http.client.HTTPConnection("127.0.0.1", PORT)
    try:
        for _ in range(CALLS):
            with lock:
                next_id[0] += 1
                i = next_id[0]
            params = {"name": "echo", "arguments": {"message": "hello"}}
            if MODERN:
                params["_meta"] = {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                }
            r, data = post(c, {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                               "params": params}, session)
            if r.status != 200 or json.loads(data).get("id") != i:
                raise RuntimeError(f"call {i}: HTTP {r.status}: {data[:200]!r}")
    except Exception as e:  # reported after the join
        failures.append(e)


threads = []
for _ in range(SESSIONS):
    session = open_session()
    for _ in range(CONNS):
        t = threading.Thread(target=calls, args=(session,))
        t.start()
        threads.append(t)
for t in threads:
    t.join()
if failures:
    sys.exit(f"callgrind_drive: {failures[0]}")
