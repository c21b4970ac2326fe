"""Drives the netfold vCenter simulator with VMware's own Python SDK (pyVmomi).

Usage: vsphere_pyvmomi.py HOST PORT USER PASSWORD

Logs in (version negotiation through /sdk/vimServiceVersions.xml), lists hosts, VMs and
distributed port groups with a paged RetrievePropertiesEx over a container view, reads one
host's CDP/LLDP neighbours with QueryNetworkHint, then creates a property filter and follows
WaitForUpdatesEx. Prints one line per finding; prints READY once caught up, then waits for the
test to power a VM off and prints the update it saw.
"""

import sys

from pyVim.connect import SmartConnect, Disconnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def main():
    host, port, user, pwd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        SmartConnect(protocol="http", host=host, port=port, user=user, pwd="wrong-" + pwd)
        print("WRONG-PASSWORD-ACCEPTED")
    except vim.fault.InvalidLogin as e:
        print("INVALID-LOGIN", e.msg)
    si = SmartConnect(protocol="http", host=host, port=port, user=user, pwd=pwd)
    content = si.RetrieveContent()
    print("API", content.about.apiType, content.about.apiVersion)
    # The everyday pyVmomi idiom: a container view's `view`, then each object's properties.
    hosts = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    print("HOSTS", " ".join(sorted(h.name for h in hosts.view)))
    vms = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    print("VM-NAMES", len({v.name for v in vms.view}))
    pc = content.propertyCollector
    view = content.viewManager.CreateContainerView(
        content.rootFolder, [vim.HostSystem, vim.VirtualMachine, vim.dvs.DistributedVirtualPortgroup], True
    )
    traverse = PC.TraversalSpec(name="traverseEntities", type=vim.view.ContainerView, path="view", skip=False)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=[
            PC.PropertySpec(type=vim.HostSystem, pathSet=["name", "config.network.pnic", "configManager.networkSystem"]),
            PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name", "runtime.powerState", "config.hardware.device"]),
            PC.PropertySpec(type=vim.dvs.DistributedVirtualPortgroup, pathSet=["name", "config.defaultPortConfig.vlan"]),
        ],
    )
    objects = []
    res = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=3))
    pages = 1
    while res is not None:
        objects.extend(res.objects)
        if not res.token:
            break
        res = pc.ContinueRetrievePropertiesEx(res.token)
        pages += 1
    counts = {}
    network_system = None
    for o in objects:
        kind = type(o.obj).__name__
        counts[kind] = counts.get(kind, 0) + 1
        props = {p.name: p.val for p in o.propSet}
        if isinstance(o.obj, vim.HostSystem) and network_system is None:
            network_system = props["configManager.networkSystem"]
            print("PNICS", " ".join(p.device for p in props["config.network.pnic"]))
        if isinstance(o.obj, vim.VirtualMachine):
            nics = [d for d in props["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualEthernetCard)]
            assert nics and nics[0].macAddress, "every generated VM has a NIC with a MAC"
        if isinstance(o.obj, vim.dvs.DistributedVirtualPortgroup):
            vlan = props["config.defaultPortConfig.vlan"]
            print("DVPG", props["name"], type(vlan).__name__)
    print("PAGES", pages)
    for kind in sorted(counts):
        print("COUNT", kind, counts[kind])
    for hint in network_system.QueryNetworkHint():
        cdp = hint.connectedSwitchPort
        print("HINT", hint.device, cdp.devId if cdp else "-", cdp.portId if cdp else "-")
    pc.CreateFilter(spec, partialUpdates=False)
    version = ""
    while True:
        upd = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=1, maxObjectUpdates=4))
        if upd is None:
            break
        version = upd.version
    print("READY", flush=True)
    while True:
        upd = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=10))
        if upd is None:
            print("NO-UPDATE")
            break
        version = upd.version
        for fs in upd.filterSet:
            for ou in fs.objectSet:
                for c in ou.changeSet:
                    print("UPDATE", ou.kind, ou.obj._moId, c.name, c.op, c.val)
        break
    Disconnect(si)
    print("DONE")


if __name__ == "__main__":
    main()
