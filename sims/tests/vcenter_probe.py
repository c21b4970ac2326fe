"""One pyVmomi probe, run against VMware's vcsim and against netfold's vCenter simulator: every
line it prints is an answer that does not depend on the inventory's size or names, so the two
servers must print the same lines (sims/tests/vcenter_faithfulness.rs compares them).

usage: vcenter_probe.py HOST PORT USER PASSWORD
"""
import ssl
import sys

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def say(*parts):
    print(*parts, flush=True)


def probe(key, answer):
    """Prints `KEY answer()`, or `KEY raised FaultName` when the call fails, so one unfaithful
    answer does not hide the others."""
    try:
        value = answer()
    except vmodl.MethodFault as e:
        value = "raised " + type(e).__name__
    except Exception as e:  # a client-side failure (a reply pyVmomi could not read)
        value = "client-error " + type(e).__name__
    say(key, value)


def fault_name(call):
    try:
        call()
    except vmodl.MethodFault as e:
        return type(e).__name__
    return "no-fault"


def refusal(call):
    """The fault a call raised, or else the faults its objects' missingSet carries."""
    try:
        objects = call()
    except vmodl.MethodFault as e:
        return "fault " + type(e).__name__
    missing = sorted({type(m.fault).__name__ + ":" + m.path for o in objects for m in (o.missingSet or [])})
    return "missing " + ",".join(missing) if missing else "silent"


def share(items, test):
    """`all`, `none` or `some` of the items pass the test (`empty` when there are none)."""
    if not items:
        return "empty"
    passed = sum(1 for i in items if test(i))
    return "all" if passed == len(items) else "none" if passed == 0 else "some"


def connect(pw):
    return SmartConnect(host=host, port=port, user=user, pwd=pw, protocol="http", disableSslCertValidation=True)


say("LOGIN-BAD", fault_name(lambda: connect(password + "-wrong")))
si = connect(password)
content = si.RetrieveContent()
pc = content.propertyCollector
probe("ABOUT", lambda: content.about.apiType)


def spec_for(obj, kind, paths, traverse_view=False):
    prop = vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)
    os = vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=traverse_view)
    if traverse_view:
        os.selectSet = [
            vmodl.query.PropertyCollector.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
        ]
    return vmodl.query.PropertyCollector.FilterSpec(propSet=[prop], objectSet=[os])


def retrieve_all(spec, max_objects=None):
    opts = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=max_objects)
    out = []
    r = pc.RetrievePropertiesEx([spec], opts)
    while r is not None:
        out.extend(r.objects)
        r = pc.ContinueRetrievePropertiesEx(r.token) if r.token else None
    return out


# Container views: the root and `recursive` are honoured.
hosts_view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
vms_view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
flat = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], False)
probe("VIEW-FLAT-HOSTS", lambda: len(flat.view))
hosts = list(hosts_view.view)
vms = list(vms_view.view)
probe("VIEW-HAS-HOSTS-AND-VMS", lambda: len(hosts) > 0 and len(vms) > 0)

# The property collector over a view agrees with the view, paged or not.
def collected(max_objects=None):
    spec = spec_for(vms_view, vim.VirtualMachine, ["name"], traverse_view=True)
    return sorted(o.obj._moId for o in retrieve_all(spec, max_objects))


probe("COLLECTOR-AGREES-WITH-VIEW", lambda: collected() == sorted(v._moId for v in vms))
probe("PAGED-ALL", lambda: collected(max_objects=1) == sorted(v._moId for v in vms))

# Refusals: a path the type does not have, an object that does not exist.
probe("INVALID-PROPERTY", lambda: refusal(lambda: retrieve_all(spec_for(hosts[0], vim.HostSystem, ["noSuchProperty"]))))
probe("INVALID-PATH-TAIL", lambda: refusal(lambda: retrieve_all(spec_for(hosts[0], vim.HostSystem, ["runtime.noSuchField"]))))
probe("INVALID-PROPERTY-PRE-EX", lambda: refusal(lambda: pc.RetrieveContents([spec_for(hosts[0], vim.HostSystem, ["noSuchProperty"])])))
ghost = vim.VirtualMachine("vm-netfold-ghost", si._stub)
probe("NOT-FOUND-COLLECTOR", lambda: fault_name(lambda: retrieve_all(spec_for(ghost, vim.VirtualMachine, ["name"]))))
probe("NOT-FOUND-FETCH", lambda: fault_name(lambda: ghost.name))
# A property spec for another type than the object's: the object is not reported.
probe("TYPE-MISMATCH", lambda: len(retrieve_all(spec_for(hosts[0], vim.VirtualMachine, ["name"]))))

# Attribute access as scripts write it (pyVmomi fetches the top-level property whole).
def nics():
    return [d for v in vms for d in v.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]


Std = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo
Dv = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
probe("POWERSTATE-VALID", lambda: all(v.runtime.powerState in ("poweredOn", "poweredOff", "suspended") for v in vms))
probe("HOST-STATE", lambda: sorted({h.runtime.connectionState for h in hosts}))
probe("HOST-PG-VLAN-INT", lambda: share([pg for h in hosts for pg in h.config.network.portgroup], lambda pg: isinstance(pg.spec.vlanId, int)))
# (vcsim's default VMs are all on distributed port groups: `empty` is as good as `all`.)
probe("NIC-STD-BACKING-NETWORK", lambda: share([n for n in nics() if isinstance(n.backing, Std)], lambda n: isinstance(n.backing.network, vim.Network)) in ("all", "empty"))
probe("NIC-DV-BACKING-PORTGROUP-KEY", lambda: share([n for n in nics() if isinstance(n.backing, Dv)], lambda n: bool(n.backing.port.portgroupKey)) in ("all", "empty"))
probe("VM-NETWORK-LIST", lambda: share(vms, lambda v: len(v.network) > 0 and all(isinstance(n, vim.Network) for n in v.network)))

# The inventory tree from the root folder, as scripts walk it.
def tree():
    root = content.rootFolder
    dcs = list(root.childEntity)
    kinds = sorted({type(c).__name__ for c in dcs})
    dc = dcs[0]
    folders = sorted({type(f).__name__ for f in (dc.hostFolder, dc.vmFolder, dc.networkFolder)})
    computes = [c for c in dc.hostFolder.childEntity]
    via_tree = sorted(h._moId for c in computes for h in c.host)
    return {
        "root-children": kinds,
        "dc-folders": folders,
        "compute-resources": all(isinstance(c, vim.ComputeResource) for c in computes),
        "hosts-via-tree": via_tree == sorted(h._moId for h in hosts),
        "host-parent": all(isinstance(h.parent, vim.ComputeResource) for h in hosts),
    }


probe("TREE", tree)


def networks():
    dc = content.rootFolder.childEntity[0]
    nets = [n for n in dc.networkFolder.childEntity if type(n) is vim.Network]
    named = all(isinstance(n.name, str) and n.name for n in nets)
    linked = all(all(isinstance(v, vim.VirtualMachine) for v in n.vm) and all(isinstance(h, vim.HostSystem) for h in n.host) for n in nets)
    return {"standard-networks": len(nets) > 0, "named": named, "linked": linked}


probe("NETWORKS", networks)

# Update versions: the initial version returns the state, the version returned waits for a change.
def versions():
    pf = pc.CreateFilter(spec_for(vms[0], vim.VirtualMachine, ["runtime.powerState"]), partialUpdates=False)
    wait = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=1)
    first = pc.WaitForUpdatesEx("", wait)
    again = pc.WaitForUpdatesEx(first.version, wait) if first is not None else "no-initial"
    pf.Destroy()
    return "initial " + str(first is not None and len(first.filterSet) == 1) + " then " + str(again is None)


probe("WAIT-VERSIONS", versions)

Disconnect(si)
say("DONE")
