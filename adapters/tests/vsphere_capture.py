"""Captures, for every vSphere call netfold makes, the request VMware's pyVmomi sends and the
reply VMware's vCenter simulator (vcsim) gives, through a small recording HTTP proxy between
the two. Run by tests/vsphere_wire_golden.rs (which starts vcsim and passes netfold's own
property paths and paging options), never by hand:

    vsphere_capture.py VCSIM_HOST VCSIM_PORT USER PASSWORD OUT_DIR SPEC_JSON

SPEC_JSON: {"props": [[type, [path, ...]], ...], "page": N, "wait": S}: netfold's
mapping::prop_specs(), page_size and wait_max_seconds.

Writes OUT_DIR/<Call>.request.xml (pyVmomi's body) and OUT_DIR/<Call>.response.xml (vcsim's
body) for each call, in netfold's order (adapters/src/vsphere/adapter.rs): the service
versions, RetrieveServiceContent, Login, CreatePropertyCollector, CreateContainerView,
RetrievePropertiesEx over the view, ContinueRetrievePropertiesEx, QueryNetworkHint,
CreateFilter, WaitForUpdatesEx (the initial enter set, a modify after a VM power-off, an empty
wait), RetrievePropertiesEx of one object (the refetch), DestroyPropertyFilter,
DestroyPropertyCollector, Logout. Exchanges not netfold's (the power-off) are not written.
"""

import http.client
import http.server
import json
import os
import sys
import threading
import time

from xml.etree import ElementTree

from pyVmomi import SoapStubAdapter, VmomiSupport, vim, vmodl

PC = vmodl.query.PropertyCollector


class Recorder:
    """The label the next exchanges are saved under (None: not saved), and what was saved."""

    def __init__(self, out):
        self.out = out
        self.label = None
        self.saved = set()
        self.lock = threading.Lock()

    def save(self, request, response):
        with self.lock:
            label = self.label
            if label is None:
                return
            if label in self.saved:
                raise RuntimeError("two exchanges under one label: " + label)
            self.saved.add(label)
        if request:
            with open(os.path.join(self.out, label + ".request.xml"), "wb") as f:
                f.write(request)
        with open(os.path.join(self.out, label + ".response.xml"), "wb") as f:
            f.write(response)


def proxy(upstream, recorder):
    host, port = upstream

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self, method):
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn = http.client.HTTPConnection(host, port, timeout=60)
            conn.request(method, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            recorder.save(body, data)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.forward("GET")

        def do_POST(self):
            self.forward("POST")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def vim_type(name):
    return {
        "HostSystem": vim.HostSystem,
        "VirtualMachine": vim.VirtualMachine,
        "DistributedVirtualPortgroup": vim.dvs.DistributedVirtualPortgroup,
        "DistributedVirtualSwitch": vim.DistributedVirtualSwitch,
    }[name]


def filter_spec(props, obj, through_view):
    """netfold's codec::filter_spec, built with pyVmomi's types."""
    prop_set = [PC.PropertySpec(type=vim_type(t), all=False, pathSet=paths) for t, paths in props]
    if through_view:
        traverse = PC.TraversalSpec(name="traverseEntities", type=vim.view.ContainerView, path="view", skip=False)
        objects = [PC.ObjectSpec(obj=obj, skip=True, selectSet=[traverse])]
    else:
        objects = [PC.ObjectSpec(obj=obj, skip=False)]
    return PC.FilterSpec(propSet=prop_set, objectSet=objects)


def main():
    host, port, user, pwd, out, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
    spec = json.loads(spec)
    props, page, wait = spec["props"], spec["page"], spec["wait"]
    os.makedirs(out, exist_ok=True)
    rec = Recorder(out)
    server = proxy((host, port), rec)
    phost, pport = server.server_address

    def call(label, f, *args):
        rec.label = label
        try:
            return f(*args)
        finally:
            rec.label = None

    # netfold first reads /sdk/vimServiceVersions.xml for the urn:vim25 version; pyVmomi's stub
    # then speaks that version (pyVim's own negotiation cannot do plain http here).
    rec.label = "ServiceVersions"
    conn = http.client.HTTPConnection(phost, pport, timeout=60)
    conn.request("GET", "/sdk/vimServiceVersions.xml")
    versions = ElementTree.fromstring(conn.getresponse().read())
    conn.close()
    rec.label = None
    served = next(ns.findtext("version") for ns in versions.iter("namespace") if ns.findtext("name") == "urn:vim25")
    version = next(v for v in VmomiSupport.GetServiceVersions("vim25") if VmomiSupport.versionIdMap[v].split("/")[-1] == served)
    stub = SoapStubAdapter(url="http://%s:%d/sdk" % (phost, pport), version=version, acceptCompressedResponses=False)
    si = vim.ServiceInstance("ServiceInstance", stub)
    content = call("RetrieveServiceContent", si.RetrieveContent)
    call("Login", content.sessionManager.Login, user, pwd)
    pc = call("CreatePropertyCollector", content.propertyCollector.CreatePropertyCollector)
    types = [vim_type(t) for t, _ in props]
    view = call("CreateContainerView", content.viewManager.CreateContainerView, content.rootFolder, types, True)
    whole = filter_spec(props, view, True)
    result = call("RetrievePropertiesEx", pc.RetrievePropertiesEx, [whole], PC.RetrieveOptions(maxObjects=page))
    # vcsim pages nothing (no token) and has no ContinueRetrievePropertiesEx: its answer to one
    # is the MethodNotFound fault, which is what is kept.
    try:
        call("ContinueRetrievePropertiesEx", pc.ContinueRetrievePropertiesEx, "1")
    except vmodl.fault.MethodNotFound:
        pass
    hosts = [o.obj for o in result.objects if isinstance(o.obj, vim.HostSystem)]
    vms = [o.obj for o in result.objects if isinstance(o.obj, vim.VirtualMachine)]
    call("QueryNetworkHint", hosts[0].configManager.networkSystem.QueryNetworkHint)
    pf = call("CreateFilter", pc.CreateFilter, whole, False)
    options = PC.WaitOptions(maxWaitSeconds=wait, maxObjectUpdates=page)
    first = call("WaitForUpdatesEx.enter", pc.WaitForUpdatesEx, "", options)
    task = vms[0].PowerOffVM_Task()
    deadline = time.monotonic() + 30
    while task.info.state not in ("success", "error"):
        if time.monotonic() > deadline:
            raise RuntimeError("PowerOffVM_Task not done within 30 s: " + str(task.info.state))
        time.sleep(0.1)
    second = call("WaitForUpdatesEx.modify", pc.WaitForUpdatesEx, first.version, options)
    quiet = PC.WaitOptions(maxWaitSeconds=1, maxObjectUpdates=page)
    call("WaitForUpdatesEx.none", pc.WaitForUpdatesEx, second.version, quiet)
    one = filter_spec(props, vms[0], False)
    call("RetrievePropertiesEx.object", pc.RetrievePropertiesEx, [one], PC.RetrieveOptions(maxObjects=1))
    call("DestroyPropertyFilter", pf.DestroyPropertyFilter)
    call("DestroyPropertyCollector", pc.DestroyPropertyCollector)
    call("Logout", content.sessionManager.Logout)
    server.shutdown()
    print("captured", len(rec.saved), "exchanges into", out)


if __name__ == "__main__":
    main()
