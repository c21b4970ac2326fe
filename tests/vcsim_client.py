"""A second client of the same vCenter user, the way monitoring tools often are: it waits on the
default PropertyCollector (`content.propertyCollector`) for VM power states, so updates there are
consumed by it. Then, when told on stdin, it powers a VM off through the API.

Usage: vcsim_client.py HOST PORT USER PASSWORD [--count-only]

Prints `COUNT HOSTS n`, `COUNT VMS n`, `COUNT DVPG n`, then `WAITING` once its filter is in place
and it is parked in WaitForUpdatesEx; on the stdin line `POWEROFF` it powers the first VM (by
name) off and prints `POWEREDOFF name`; on `ADDNIC NETWORK` it adds a NIC on that standard
network to the first VM (ReconfigVM_Task) and prints `ADDED vm-name state`. With
`--count-only` it prints the three counts and exits.

Deltas, each in a session of its own, each printing `DONE COMMAND state` (the task's state, or
`success` for calls without a task) once vcsim has answered:
- `POWER VM on|off` (PowerOnVM_Task / PowerOffVM_Task)
- `RELOCATE VM HOST` (RelocateVM_Task to the host of that name: vMotion)
- `REBACK VM NETWORK` (ReconfigVM_Task editing the VM's first NIC onto a standard network,
  connected)
- `DISCONNECT VM` (ReconfigVM_Task editing the VM's first NIC to connected=false)
- `DESTROY VM` (Destroy_Task)
- `DVPG-VLAN PORTGROUP ID` and `DVPG-TRUNK PORTGROUP LOW-HIGH` (ReconfigureDVPortgroup_Task)
- `TERMINATE-OTHERS` (SessionManager.TerminateSession of every session but this client's two)
"""

import sys
import threading
import time

from pyVim.connect import SmartConnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def main():
    host, port, user, pwd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    si = SmartConnect(protocol="http", host=host, port=port, user=user, pwd=pwd)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView
    hosts = view(content.rootFolder, [vim.HostSystem], True).view
    vms = view(content.rootFolder, [vim.VirtualMachine], True).view
    dvpgs = view(content.rootFolder, [vim.dvs.DistributedVirtualPortgroup], True).view
    print("COUNT HOSTS", len(hosts))
    print("COUNT VMS", len(vms))
    print("COUNT DVPG", len(dvpgs))
    sys.stdout.flush()
    if sys.argv[5:] == ["--count-only"]:
        return
    print("VM-NAMES", " ".join(sorted(v.name for v in vms)))
    sys.stdout.flush()

    pc = content.propertyCollector
    vmview = view(content.rootFolder, [vim.VirtualMachine], True)
    traverse = PC.TraversalSpec(name="t", type=vim.view.ContainerView, path="view", skip=False)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=vmview, skip=True, selectSet=[traverse])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["runtime.powerState"])],
    )
    pc.CreateFilter(spec, True)
    first = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=5))
    version = first.version if first else ""

    def follow():
        v = version
        while True:
            u = pc.WaitForUpdatesEx(v, PC.WaitOptions(maxWaitSeconds=60))
            if u:
                v = u.version

    threading.Thread(target=follow, daemon=True).start()
    print("WAITING")
    sys.stdout.flush()
    keep = si.content.sessionManager.currentSession.key
    for line in sys.stdin:
        words = line.split()
        if words and words[0] in DELTAS:
            other = SmartConnect(protocol="http", host=host, port=port, user=user, pwd=pwd)
            state = DELTAS[words[0]](other, words[1:], keep)
            print("DONE", words[0], state)
            sys.stdout.flush()
            continue
        if words and words[0] == "ADDNIC":
            # A second session: the first is parked in WaitForUpdatesEx on the default collector.
            si2 = SmartConnect(protocol="http", host=host, port=port, user=user, pwd=pwd)
            c2 = si2.RetrieveContent()
            vm = sorted(c2.viewManager.CreateContainerView(c2.rootFolder, [vim.VirtualMachine], True).view,
                        key=lambda v: v.name)[0]
            backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=" ".join(words[1:]))
            connect = vim.vm.device.VirtualDevice.ConnectInfo(connected=True, startConnected=True)
            nic = vim.vm.device.VirtualE1000(key=-1, backing=backing, connectable=connect)
            spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)])
            task = vm.ReconfigVM_Task(spec)
            while task.info.state not in ("success", "error"):
                time.sleep(0.1)
            print("ADDED", vm.name, task.info.state)
            sys.stdout.flush()
        if line.strip() == "POWEROFF":
            vm = sorted(vms, key=lambda v: v.name)[0]
            # A second session for the task: the first is parked in WaitForUpdatesEx.
            si2 = SmartConnect(protocol="http", host=host, port=port, user=user, pwd=pwd)
            target = [v for v in si2.RetrieveContent().viewManager.CreateContainerView(
                si2.content.rootFolder, [vim.VirtualMachine], True).view if v.name == vm.name][0]
            task = target.PowerOffVM_Task()
            while task.info.state not in ("success", "error"):
                pass
            print("POWEREDOFF", vm.name, task.info.state)
            sys.stdout.flush()


def find(si, kind, name):
    c = si.RetrieveContent()
    found = [o for o in c.viewManager.CreateContainerView(c.rootFolder, [kind], True).view if o.name == name]
    if len(found) != 1:
        raise SystemExit(f"{len(found)} {kind.__name__} named {name}")
    return found[0]


def wait(task):
    while task.info.state not in ("success", "error"):
        time.sleep(0.05)
    return task.info.state if task.info.state == "success" else f"error:{task.info.error}"


def first_nic(vm):
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)][0]


def edit_nic(vm, change):
    nic = first_nic(vm)
    change(nic)
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)])
    return wait(vm.ReconfigVM_Task(spec))


def power(si, args, _):
    vm = find(si, vim.VirtualMachine, args[0])
    return wait(vm.PowerOnVM_Task() if args[1] == "on" else vm.PowerOffVM_Task())


def relocate(si, args, _):
    vm, target = find(si, vim.VirtualMachine, args[0]), find(si, vim.HostSystem, args[1])
    return wait(vm.RelocateVM_Task(vim.vm.RelocateSpec(host=target, pool=target.parent.resourcePool)))


def reback(si, args, _):
    def onto(nic):
        nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=" ".join(args[1:]))
        # vcsim's VMs come with their NIC unplugged (connected=false): plug it in on the move.
        nic.connectable = vim.vm.device.VirtualDevice.ConnectInfo(connected=True, startConnected=True)
    return edit_nic(find(si, vim.VirtualMachine, args[0]), onto)


def disconnect(si, args, _):
    def unplug(nic):
        nic.connectable = vim.vm.device.VirtualDevice.ConnectInfo(connected=False, startConnected=False)
    return edit_nic(find(si, vim.VirtualMachine, args[0]), unplug)


def destroy(si, args, _):
    return wait(find(si, vim.VirtualMachine, args[0]).Destroy_Task())


def dvpg(vlan):
    def run(si, args, _):
        pg = find(si, vim.dvs.DistributedVirtualPortgroup, args[0])
        port = vim.dvs.VmwareDistributedVirtualSwitch.VmwarePortConfigPolicy(vlan=vlan(args[1]))
        spec = vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
            configVersion=pg.config.configVersion, name=pg.name, type=pg.config.type,
            numPorts=pg.config.numPorts, defaultPortConfig=port)
        return wait(pg.ReconfigureDVPortgroup_Task(spec))
    return run


def vlan_id(arg):
    return vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec(vlanId=int(arg), inherited=False)


def trunk(arg):
    low, high = (int(x) for x in arg.split("-"))
    rng = vim.NumericRange(start=low, end=high)
    return vim.dvs.VmwareDistributedVirtualSwitch.TrunkVlanSpec(vlanId=[rng], inherited=False)


def terminate_others(si, _, keep):
    sm = si.content.sessionManager
    mine = {keep, sm.currentSession.key}
    others = [s.key for s in sm.sessionList if s.key not in mine]
    sm.TerminateSession(others)
    return f"success:{len(others)}"


DELTAS = {
    "POWER": power,
    "RELOCATE": relocate,
    "REBACK": reback,
    "DISCONNECT": disconnect,
    "DESTROY": destroy,
    "DVPG-VLAN": dvpg(vlan_id),
    "DVPG-TRUNK": dvpg(trunk),
    "TERMINATE-OTHERS": terminate_others,
}


if __name__ == "__main__":
    main()
