"""Drives the official Python SDK, b24pysdk, through the proxy: tests/sdks.rs runs it.

Environment:
  B24_BASE_URL   the proxy, e.g. https://127.0.0.1:PORT (b24pysdk only speaks https; see below)
  B24_WEBHOOK    the webhook's "USER_ID/SECRET", e.g. 1/sim-secret-1
  B24_CA_FILE    the test CA that signed the proxy's certificate (sets REQUESTS_CA_BUNDLE:
                 requests honours it because the SDK never passes verify=)
  B24_PLAIN_HTTP_OVERRIDE=1
                 only for a plain-http endpoint (e.g. the simulator itself): replace the SDK's
                 hard-coded https base URL, as protocol doc section 3.2 (b) describes

Usage: python pysdk_check.py [STEP ...]   (no step: all of them, in order)

Prints one JSON object per step on its own line. The SDK is used unchanged, the way an
integration uses it: typed calls (client.crm.automatedsolution.update(...)), client.call_batch.
"""

import json
import os
import sys
import time
import traceback
from urllib.parse import urlsplit

if os.environ.get("B24_CA_FILE"):
    os.environ["REQUESTS_CA_BUNDLE"] = os.environ["B24_CA_FILE"]

from b24pysdk import BitrixWebhook, Client, errors  # noqa: E402

BASE = urlsplit(os.environ["B24_BASE_URL"])
if os.environ.get("B24_PLAIN_HTTP_OVERRIDE") == "1":
    _m = sys.modules["b24pysdk.api.callers.call_method"]
    _m._MethodCaller._base_url = property(lambda s: f"http://{s._domain}/rest")

CLIENT = Client(BitrixWebhook(domain=BASE.netloc, webhook_token=os.environ["B24_WEBHOOK"]))
CRM = CLIENT.crm.automatedsolution


def api_error(e):
    """What the SDK's own API error carries."""
    return {
        "type": type(e).__name__,
        "api_error": isinstance(e, errors.BitrixAPIError),
        "code": getattr(e, "error", None),
        "description": getattr(e, "error_description", None),
        "status": getattr(getattr(e, "response", None), "status_code", None),
    }


def batch_out(batch):
    """A b24pysdk batch result as plain JSON: per-key results and errors."""
    res = batch.result
    result = res.result if isinstance(res.result, dict) else dict(enumerate(res.result or []))
    result_error = res.result_error if isinstance(res.result_error, dict) else dict(enumerate(res.result_error or []))
    return {"result": result, "result_error": result_error}


def single_update():
    r = CRM.update(238, {"title": "HR (b24pysdk)", "typeIds": [14, 158, 190]}).result
    return {"ok": True, "result": r}


def batch_reads():
    b = CLIENT.call_batch(
        {
            "get": CRM.get(238),
            "deals": CLIENT.crm.deal.list(),
            "me": CLIENT.user.current(),
        }
    )
    out = batch_out(b)
    r = out["result"]
    return {
        "ok": not out["result_error"],
        "solution": r.get("get", {}).get("automatedSolution"),
        "deal_count": len(r.get("deals") or []),
        "user_id": (r.get("me") or {}).get("ID"),
        "result_error": out["result_error"],
    }


def batch_updates():
    b = CLIENT.call_batch(
        {
            "rename": CRM.update(238, {"title": "HR (b24pysdk batch)"}),
            "bind": CRM.update(301, {"typeIds": [172, 190]}),
        }
    )
    out = batch_out(b)
    return {"ok": not out["result_error"], **out}


def batch_refused():
    # An empty list goes on the wire as fields[typeIds][]= (one empty element), which the portal
    # reads as "unbind everything" (protocol doc 3.1): the proxy must refuse the whole batch.
    b = CLIENT.call_batch(
        {
            "rename": CRM.update(238, {"title": "must not be applied"}),
            "unbind": CRM.update(267, {"typeIds": []}),
        }
    )
    out = batch_out(b)
    return {"ok": not out["result_error"], **out}


def empty_type_ids():
    r = CRM.update(267, {"typeIds": []}).result
    return {"ok": True, "result": r}


STEPS = {
    "single_update": single_update,
    "batch_reads": batch_reads,
    "batch_updates": batch_updates,
    "batch_refused": batch_refused,
    "empty_type_ids": empty_type_ids,
}


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
        except errors.BitrixSDKException as e:  # the SDK's normal error for a refused call
            out = {"ok": False, "raised": True, "crashed": False, "error": api_error(e)}
        except Exception as e:  # anything else is a crash
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
