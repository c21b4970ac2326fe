"""Writes the XML-RPC request bodies XenAPI.py sends for every call netfold's XenAPI client makes,
one file per call, into DIR (default: tests/golden/xen/xenapi_py/ beside this script).

Usage: xenapi_requests.py [DIR]

The calls go through XenAPI.Session itself (its login, its session-ref prepending, its logout)
with a transport that records the body instead of sending it and answers with a canned xapi
result, so each file holds exactly the bytes xmlrpc.client.dumps produces for XenAPI.py
(allow_none=True, as XenAPI.Session passes). The arguments are the ones netfold sends
(adapters/src/xen/client.rs; the classes of adapters/src/xen/mapping.rs CLASSES); the canned
results give the same session ref, pool ref and token netfold's test peer gives
(tests/xen_wire_golden.rs), so the two sides are comparable call for call.
"""

import os
import sys
import xmlrpc.client

import XenAPI

# The values tests/xen_wire_golden.rs uses: change both together.
USER = "root"
PASSWORD = "pa<ss> & \"w'rd"
SESSION = "OpaqueRef:4c7c6b9a-1f2e-4d3c-8b5a-0e9f8d7c6b5a"
POOL = "OpaqueRef:0f1e2d3c-4b5a-4968-8776-655443322110"
TOKEN = "00000000000000000042,00000000000000000000"
CLASSES = ["pool", "host", "VM", "VIF", "network", "PIF", "VLAN", "PIF_metrics"]
EVENT_TIMEOUT = 10.0  # netfold's default event_timeout_secs (adapters/src/xen/config.rs)

RESULTS = {
    "session.login_with_password": SESSION,
    "session.logout": "",
    "pool.get_all": [POOL],
    "event.inject": TOKEN,
    "event.from": {"events": [], "valid_ref_counts": {}, "token": TOKEN},
}


class Recorder(xmlrpc.client.Transport):
    """Keeps each request body; answers with xapi's Success envelope."""

    def __init__(self):
        super().__init__()
        self.bodies = []

    def request(self, host, handler, request_body, verbose=False):
        params, method = xmlrpc.client.loads(request_body)
        self.bodies.append((method, request_body))
        value = RESULTS.get(method, {})  # <class>.get_all_records: no records
        return ({"Status": "Success", "Value": value},)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "golden", "xen", "xenapi_py")
    rec = Recorder()
    s = XenAPI.Session("http://xapi.invalid/", transport=rec)
    s.xenapi.login_with_password(USER, PASSWORD, "1.0", "netfold")
    s.xenapi.pool.get_all()
    s.xenapi.event.inject("pool", POOL)
    for c in CLASSES:
        getattr(s.xenapi, c).get_all_records()
    getattr(s.xenapi.event, "from")(CLASSES, TOKEN, EVENT_TIMEOUT)  # `from` is a Python keyword
    s.xenapi.session.logout()
    os.makedirs(out, exist_ok=True)
    for method, body in rec.bodies:
        with open(os.path.join(out, method + ".xml"), "wb") as f:
            f.write(body)
    print("wrote", len(rec.bodies), "requests to", out)


if __name__ == "__main__":
    main()
