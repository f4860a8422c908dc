"""Drives fast-bitrix24 (PyPI) through the proxy: tests/sdks.rs runs it.

Environment:
  B24_BASE_URL   the proxy, e.g. http://127.0.0.1:PORT (fast-bitrix24 accepts plain http as is;
                 https works too with B24_CA_FILE)
  B24_WEBHOOK    the webhook's "USER_ID/SECRET", e.g. 1/sim-secret-1
  B24_CA_FILE    optional: the test CA of an https proxy (sets SSL_CERT_FILE before aiohttp
                 builds its default SSL context)

Usage: python fastb24_check.py [STEP ...]   (no step: all of them, in order)

Prints one JSON object per step on its own line. How fast-bitrix24 puts calls on the wire
(protocol doc section 3): call(method, item) always sends a `batch`; call(..., raw=True) sends
the method itself with the params as JSON; call_batch() sends a caller-built `batch`. It raises
only on a non-2xx answer (aiohttp raise_for_status) or a non-empty result_error: an `error`
body on HTTP 200 would come back as a plain dict.
"""

import json
import os
import sys
import time
import traceback

if os.environ.get("B24_CA_FILE"):
    os.environ["SSL_CERT_FILE"] = os.environ["B24_CA_FILE"]

import aiohttp  # noqa: E402
from fast_bitrix24 import Bitrix  # noqa: E402
from fast_bitrix24.server_response import ErrorInServerResponseException  # noqa: E402

WEBHOOK = f"{os.environ['B24_BASE_URL'].rstrip('/')}/rest/{os.environ['B24_WEBHOOK'].strip('/')}/"
B = Bitrix(WEBHOOK, verbose=False)
UPDATE = "crm.automatedsolution.update"


def single_update():
    r = B.call(UPDATE, {"id": 238, "fields": {"title": "HR (fast-bitrix24)", "typeIds": [14, 158, 190]}}, raw=True)
    return {"ok": "result" in r and "error" not in r, "result": r.get("result"), "error_body": r.get("error")}


def batch_reads():
    # The raw batch helper, with the caller's own command strings...
    raw = B.call_batch(
        {
            "halt": 0,
            "cmd": {
                "get": "crm.automatedsolution.get?id=238",
                "deals": "crm.deal.list",
                "me": "user.current",
            },
        }
    )
    # ...and the usual one: call() over a list of items is one batch of gets.
    gets = B.call("crm.automatedsolution.get", [{"id": 238}, {"id": 267}])
    return {
        "ok": True,
        "solution": raw["get"]["automatedSolution"],
        "deal_count": len(raw["deals"]),
        "user_id": raw["me"]["ID"],
        "gets": gets,
    }


def batch_updates():
    r = B.call(
        UPDATE,
        [
            {"id": 238, "fields": {"title": "HR (fast-bitrix24 batch)"}},
            {"id": 301, "fields": {"typeIds": [172, 190]}},
        ],
    )
    return {"ok": True, "result": r}


def batch_refused():
    # fast-bitrix24 drops empty lists from batch commands (an update with typeIds [] would
    # change nothing), so "unbind everything" is spelled [0], which the portal normalises to
    # no bindings at all: fields[typeIds][0]=0. The proxy must refuse the whole batch.
    r = B.call(
        UPDATE,
        [
            {"id": 238, "fields": {"title": "must not be applied"}},
            {"id": 267, "fields": {"typeIds": [0]}},
        ],
    )
    return {"ok": True, "result": r}


def empty_type_ids():
    r = B.call(UPDATE, {"id": 267, "fields": {"typeIds": []}}, raw=True)
    return {"ok": "error" not in r, "result": r.get("result"), "error_body": r.get("error")}


STEPS = {
    "single_update": single_update,
    "batch_reads": batch_reads,
    "batch_updates": batch_updates,
    "batch_refused": batch_refused,
    "empty_type_ids": empty_type_ids,
}


def sdk_error(e):
    """fast-bitrix24's normal errors: aiohttp's ClientResponseError for a non-2xx answer (it
    carries the status and reason phrase, not the body), or its own for a result_error."""
    if isinstance(e, aiohttp.ClientResponseError):
        return {"type": type(e).__name__, "api_error": True, "status": e.status, "message": e.message}
    return {"type": type(e).__name__, "api_error": True, "status": None, "message": str(e)}


def main(argv):
    names = argv or list(STEPS)
    for name in names:
        if name not in STEPS:
            print(f"unknown step {name!r}; steps: {', '.join(STEPS)}", file=sys.stderr)
            return 2
    for name in names:
        started = time.monotonic()
        try:
            out = {**STEPS[name](), "raised": False, "crashed": False}
        except (aiohttp.ClientResponseError, ErrorInServerResponseException) as e:
            out = {"ok": False, "raised": True, "crashed": False, "error": sdk_error(e)}
        except Exception as e:  # anything else (a RuntimeError after retries, ...) is a crash
            out = {
                "ok": False,
                "raised": True,
                "crashed": True,
                "error": {"type": type(e).__name__, "message": str(e)},
                "traceback": traceback.format_exc(),
            }
        out = {"step": name, **out, "elapsed_ms": round((time.monotonic() - started) * 1000)}
        print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
