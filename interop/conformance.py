#!/usr/bin/env python3
"""Runs the official MCP conformance suite's server scenarios against a
running mcp-proxy and prints one line per scenario, "PASS conformance/<label>/<scenario>"
or "FAIL ...: <reason>", for scripts/test.sh to count. Standard library only.

    python3 conformance.py --node NODE22 --url http://127.0.0.1:P/mcp --label per-session --out DIR

Every scenario of `conformance list --server` (suite "all": the active and the
pending ones) is run. A scenario passes when its checks.json has at least one
SUCCESS and no FAILURE. One with only WARNING/INFO checks did not exercise what
it tests, and counts as a failure unless it is excluded below with a reason.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

# Scenarios that cannot apply to the proxy in a given mode (the --label),
# with the reason. They still run; a failing one is printed as "SKIP" with the
# reason and counted as skipped (never hidden), a passing one as PASS. Apart
# from these every server scenario applies: the stdio child
# (conformance-server.mjs) implements the tools/resources/prompts the
# scenarios name, and everything HTTP-side is the proxy's.
_NO_SESSION = "needs a session (Mcp-Session-Id); --stateless serves none by design"
_NO_ROUTE = (
    "needs a server-to-client request (sampling/elicitation) on the tool call's stream; with "
    "--stateless no session ties that POST to the client's initialize (nor a later POST of the "
    "client's answer to the request), so the proxy refuses the child's request at once with an "
    "error ('no client session is tied to this request')"
)
EXCLUDED: dict[str, dict[str, str]] = {
    # "*": every mode. (server-sse-polling was here until the proxy sent
    # priming events; its retry-field check is still a WARNING, by design.)
    "*": {},
    "stateless": {
        "server-sse-polling": _NO_SESSION,
        "server-sse-multiple-streams": _NO_SESSION,
        "tools-call-sampling": _NO_ROUTE,
        "tools-call-elicitation": _NO_ROUTE,
        "elicitation-sep1034-defaults": _NO_ROUTE,
        "elicitation-sep1330-enums": _NO_ROUTE,
    },
}

TIMESTAMP = re.compile(r"-\d{4}-\d\d-\d\dT[\d-]+Z$")


def scenario_names(node: str) -> list[str]:
    out = subprocess.run(
        [node, str(CLI), "list", "--server"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return re.findall(r"^\s*-\s+([a-z0-9-]+)", out, flags=re.M)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True, help="a Node >= 22 binary")
    p.add_argument("--url", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--timeout", type=int, default=600, help="seconds for the whole suite")
    a = p.parse_args()

    names = scenario_names(a.node)
    if not names:
        print(f"FAIL conformance/{a.label}/list: the CLI listed no server scenarios")
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.out / "cli.log"
    try:
        with log.open("w") as f:
            subprocess.run(
                [a.node, str(CLI), "server", "--url", a.url, "--suite", "all", "-o", str(a.out)],
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=a.timeout,
                check=False,  # its exit code is 1 on any failure; the checks say which
            )
    except subprocess.TimeoutExpired:
        print(f"FAIL conformance/{a.label}/suite: the suite did not finish within {a.timeout} s (log: {log})")
        return 1

    results: dict[str, list[dict]] = {}
    for checks in a.out.glob("server-*/checks.json"):
        name = TIMESTAMP.sub("", checks.parent.name)[len("server-") :]
        results[name] = json.loads(checks.read_text())

    failed = 0
    for name in names:
        label = f"conformance/{a.label}/{name}"
        excluded = {**EXCLUDED.get("*", {}), **EXCLUDED.get(a.label, {})}
        checks = results.get(name)
        if checks is None:
            failed += 1
            print(f"FAIL {label}: no checks.json (see {log})")
            continue
        bad = [c for c in checks if c.get("status") == "FAILURE"]
        good = [c for c in checks if c.get("status") == "SUCCESS"]
        warn = [c for c in checks if c.get("status") == "WARNING"]
        if good and not bad:
            note = " (listed as excluded, but passed: the exclusion can go)" if name in excluded else ""
            print(f"PASS {label}{note}")
        elif name in excluded and not (bad and name in EXCLUDED.get("*", {})):
            # A "*" exclusion covers optional behaviour only: a FAILURE still fails.
            print(f"SKIP {label}: {excluded[name]}")
        elif bad:
            failed += 1
            why = "; ".join(f"{c.get('id')}: {c.get('errorMessage') or c.get('description')}" for c in bad)
            print(f"FAIL {label}: {why}"[:600])
        else:
            failed += 1
            why = "; ".join(f"{c.get('id')}: {c.get('errorMessage') or c.get('description')}" for c in warn)
            print(f"FAIL {label}: nothing was exercised (only warnings: {why or 'none'})"[:600])
    extra = sorted(set(results) - set(names))
    for name in extra:
        print(f"INFO conformance/{a.label}: results for unlisted scenario {name} ignored")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
