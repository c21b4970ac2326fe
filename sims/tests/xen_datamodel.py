"""Checks netfold's XenServer pool simulator against xapi's data model, through the official
XenAPI.py client: every field of every record the simulator serves is a field xapi's data model
gives that class, with the wire form of its type; and the calls a client makes around the
records (argument counts, `session.get_this_host`, `get_all_records_where`, the classes a pool
without bonds or storage still has) answer as xapi does.

The field table below is transcribed from xapi's own data model (`doc/data/xenapi.json` in
xapi-project/xen-api, generated from `ocaml/idl/datamodel*.ml`); a field the simulator adds must
be added here with its xapi type, or this script fails.

usage: xen_datamodel.py URL USER PASSWORD — prints one `ok …` line per check, then `DONE`.
"""
import sys
import xmlrpc.client

import XenAPI

XAPI_FIELDS = {
    "pool": {
        "default_SR": "SR ref",
        "master": "host ref",
        "name_label": "string",
        "other_config": "(string -> string) map",
        "uuid": "string",
    },
    "host": {
        "API_version_major": "int",
        "API_version_minor": "int",
        "PIFs": "PIF ref set",
        "address": "string",
        "enabled": "bool",
        "hostname": "string",
        "name_description": "string",
        "name_label": "string",
        "other_config": "(string -> string) map",
        "resident_VMs": "VM ref set",
        "uuid": "string",
    },
    "VM": {
        "VCPUs_max": "int",
        "VIFs": "VIF ref set",
        "affinity": "host ref",
        "is_a_snapshot": "bool",
        "is_a_template": "bool",
        "is_control_domain": "bool",
        "memory_static_max": "int",
        "name_description": "string",
        "name_label": "string",
        "other_config": "(string -> string) map",
        "power_state": "enum vm_power_state",
        "resident_on": "host ref",
        "uuid": "string",
    },
    "VIF": {
        "MAC": "string",
        "MTU": "int",
        "VM": "VM ref",
        "currently_attached": "bool",
        "device": "string",
        "network": "network ref",
        "other_config": "(string -> string) map",
        "uuid": "string",
    },
    "network": {
        "MTU": "int",
        "PIFs": "PIF ref set",
        "VIFs": "VIF ref set",
        "bridge": "string",
        "name_description": "string",
        "name_label": "string",
        "other_config": "(string -> string) map",
        "uuid": "string",
    },
    "PIF": {
        "MAC": "string",
        "MTU": "int",
        "VLAN": "int",
        "VLAN_master_of": "VLAN ref",
        "VLAN_slave_of": "VLAN ref set",
        "bond_master_of": "Bond ref set",
        "currently_attached": "bool",
        "device": "string",
        "host": "host ref",
        "management": "bool",
        "metrics": "PIF_metrics ref",
        "network": "network ref",
        "other_config": "(string -> string) map",
        "physical": "bool",
        "uuid": "string",
    },
    "VLAN": {
        "other_config": "(string -> string) map",
        "tag": "int",
        "tagged_PIF": "PIF ref",
        "untagged_PIF": "PIF ref",
        "uuid": "string",
    },
    "PIF_metrics": {
        "carrier": "bool",
        "duplex": "bool",
        "other_config": "(string -> string) map",
        "speed": "int",
        "uuid": "string",
    },
}

ENUMS = {"vm_power_state": {"Halted", "Paused", "Running", "Suspended"}}


def wire_ok(kind, value):
    """Whether `value`, as XenAPI.py decoded it, has the wire form of xapi type `kind`."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":  # xapi sends 64-bit ints as decimal strings
        return isinstance(value, str) and value.lstrip("-").isdigit()
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "float":
        return isinstance(value, float)
    if kind == "datetime":
        return isinstance(value, xmlrpc.client.DateTime)
    if kind.endswith(" ref"):
        return isinstance(value, str) and value.startswith("OpaqueRef:")
    if kind.endswith(" set"):
        return isinstance(value, list) and all(wire_ok(kind[: -len(" set")], v) for v in value)
    if kind.endswith(" map"):
        return isinstance(value, dict)
    if kind.startswith("enum "):
        return value in ENUMS[kind[len("enum "):]]
    raise AssertionError("no rule for xapi type " + kind)


def failure(call):
    try:
        call()
    except XenAPI.Failure as f:
        return f.details
    return None


url, user, password = sys.argv[1:4]
session = XenAPI.Session(url)
session.xenapi.login_with_password(user, password, "1.0", "netfold-datamodel-check")
try:
    for cls, fields in XAPI_FIELDS.items():
        records = getattr(session.xenapi, cls).get_all_records()
        assert records, cls + ": the simulator serves records of it"
        for ref, rec in records.items():
            unknown = sorted(set(rec) - set(fields))
            assert not unknown, f"{cls} {ref}: fields xapi's data model does not have: {unknown}"
            for name, value in rec.items():
                assert wire_ok(fields[name], value), f"{cls}.{name} = {value!r} is not a {fields[name]}"
        print("ok fields", cls, len(records), flush=True)

    host = session.xenapi.session.get_this_host(session.handle)
    assert host in session.xenapi.host.get_all(), host
    print("ok get_this_host", flush=True)

    details = failure(lambda: session.xenapi.VM.get_record())
    # xapi's generated server counts without the session: `self` expected, nothing received.
    assert details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"], details
    print("ok count_mismatch", flush=True)

    vms = session.xenapi.VM.get_all_records()
    name = next(r["name_label"] for r in vms.values() if not r["is_control_domain"])
    where = session.xenapi.VM.get_all_records_where(f'field "name_label" = "{name}"')
    assert sorted(where) == sorted(r for r, v in vms.items() if v["name_label"] == name), where
    print("ok get_all_records_where", flush=True)

    for cls in ["Bond", "SR", "VM_metrics", "host_metrics"]:
        assert getattr(session.xenapi, cls).get_all_records() == {}, cls
        assert getattr(session.xenapi, cls).get_all() == [], cls
    print("ok empty_classes", flush=True)

    details = failure(lambda: session.xenapi.VM.get_record("OpaqueRef:netfold-no-such-vm"))
    assert details == ["HANDLE_INVALID", "VM", "OpaqueRef:netfold-no-such-vm"], details
    print("ok handle_invalid", flush=True)
finally:
    session.xenapi.session.logout()
print("DONE", flush=True)
