"""A second client of the same vCenter user, the way monitoring tools often are: it waits on the
default PropertyCollector (`content.propertyCollector`) for VM power states, so updates there are
consumed by it. Then, when told on stdin, it powers a VM off through the API.

Usage: vcsim_client.py HOST PORT USER PASSWORD [--count-only]

Prints `COUNT HOSTS n`, `COUNT VMS n`, `COUNT DVPG n`, then `WAITING` once its filter is in place
and it is parked in WaitForUpdatesEx; on the stdin line `POWEROFF` it powers the first VM (by
name) off and prints `POWEREDOFF name`; on `ADDNIC NETWORK` it adds a NIC on that standard
network to the first VM (ReconfigVM_Task) and prints `ADDED vm-name state`. With
`--count-only` it prints the three counts and exits.
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
    for line in sys.stdin:
        words = line.split()
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


if __name__ == "__main__":
    main()
