"""Drives the simulator with the official XenAPI.py client (PyPI package `XenAPI`).

Run by tests/xen_xenapi_py.rs: argv = URL USER PASSWORD. Logs in, reads the API version the
way XenAPI.py does (pool.get_all, pool.get_master, host.get_API_version_major/minor), reads
every class the adapter reads, prints `ready <token>`, then follows event.from until it sees a
VIF `mod` with currently_attached false (the Rust side unplugs one), and logs out.
"""
import sys

import XenAPI

url, user, password = sys.argv[1:4]
session = XenAPI.Session(url)
session.xenapi.login_with_password(user, password, "1.0", "netfold-xenapi-py-test")
try:
    print("api", session.API_version, flush=True)
    counts = {}
    for cls in ["pool", "host", "VM", "VIF", "network", "PIF", "VLAN", "PIF_metrics"]:
        counts[cls] = len(getattr(session.xenapi, cls).get_all_records())
    vms = session.xenapi.VM.get_all_records()
    guests = [r for r in vms.values() if not r["is_a_template"] and not r["is_control_domain"]]
    print("counts", sorted(counts.items()), "guests", len(guests), flush=True)
    pifs = session.xenapi.PIF.get_all_records()
    vlan_pifs = [p for p in pifs.values() if int(p["VLAN"]) >= 0]
    for p in vlan_pifs:
        vlan = session.xenapi.VLAN.get_record(p["VLAN_master_of"])
        assert int(vlan["tag"]) >= 1, vlan
    print("vlan_pifs", len(vlan_pifs), flush=True)
    first = session.xenapi.event_from(["vm", "vif"], "", 5.0)
    token = first["token"]
    print("ready", token, flush=True)
    for _ in range(20):
        batch = session.xenapi.event_from(["vm", "vif"], token, 5.0)
        token = batch["token"]
        for ev in batch["events"]:
            if ev["class"] == "vif" and ev["operation"] == "mod" and not ev["snapshot"]["currently_attached"]:
                print("saw", ev["class"], ev["operation"], ev["ref"], flush=True)
                sys.exit(0)
    print("no unplug event seen", flush=True)
    sys.exit(1)
finally:
    session.xenapi.session.logout()
