//! Benchmark: decoding one `RetrievePropertiesEx` page of 1,000 VMs (each with name, host,
//! power state and a device list holding a PCI controller and a vmxnet3 NIC, as vCenter sends
//! them) with the vSphere codec. Criterion reports throughput in bytes (MB/s) and in objects;
//! `tree_only` (the namespace-resolved element tree) and `raw_events` (quick-xml's namespace
//! reader alone, no allocation) are baselines measured under the same machine load.

use adapters::vsphere::codec;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const VMS: usize = 1_000;

fn page() -> Vec<u8> {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenc=\"http://schemas.xmlsoap.org/soap/encoding/\" \
         xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><RetrievePropertiesExResponse xmlns=\"urn:vim25\">\
         <returnval><token>session[52a1]7</token>",
    );
    for i in 0..VMS {
        s.push_str(&format!(
            "<objects><obj type=\"VirtualMachine\">vm-{id}</obj>\
             <propSet><name>config.hardware.device</name><val xsi:type=\"ArrayOfVirtualDevice\">\
             <VirtualDevice xsi:type=\"VirtualPCIController\"><key>100</key><deviceInfo><label>PCI controller 0</label><summary>PCI controller 0</summary></deviceInfo><busNumber>0</busNumber></VirtualDevice>\
             <VirtualDevice xsi:type=\"VirtualVmxnet3\"><key>4000</key><deviceInfo><label>Network adapter 1</label><summary>pg-{vlan}</summary></deviceInfo>\
             <backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>pg-{vlan}</deviceName><useAutoDetect>false</useAutoDetect></backing>\
             <connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>true</connected><status>ok</status></connectable>\
             <slotInfo xsi:type=\"VirtualDevicePciBusSlotInfo\"><pciSlotNumber>192</pciSlotNumber></slotInfo><controllerKey>100</controllerKey><unitNumber>7</unitNumber>\
             <addressType>assigned</addressType><macAddress>00:50:56:00:{a:02x}:{b:02x}</macAddress><wakeOnLanEnabled>true</wakeOnLanEnabled>\
             <resourceAllocation><reservation>0</reservation><share><shares>50</shares><level>normal</level></share><limit>-1</limit></resourceAllocation>\
             <uptCompatibilityEnabled>true</uptCompatibilityEnabled></VirtualDevice></val></propSet>\
             <propSet><name>name</name><val xsi:type=\"xsd:string\">vm-{id}.sim.local</val></propSet>\
             <propSet><name>runtime.host</name><val type=\"HostSystem\" xsi:type=\"ManagedObjectReference\">host-{host}</val></propSet>\
             <propSet><name>runtime.powerState</name><val xsi:type=\"VirtualMachinePowerState\">poweredOn</val></propSet></objects>",
            id = 1000 + i,
            vlan = 100 + i % 20,
            a = i >> 8,
            b = i & 0xff,
            host = i / 20,
        ));
    }
    s.push_str("</returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>");
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    let xml = page();
    let check = codec::decode_retrieve(&xml, "RetrievePropertiesEx").expect("page decodes");
    assert_eq!(check.objects.len(), VMS);
    let mut g = c.benchmark_group("vsphere_retrieve_page_1000_vms");
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.bench_function("bytes", |b| {
        b.iter(|| codec::decode_retrieve(std::hint::black_box(&xml), "RetrievePropertiesEx"))
    });
    g.throughput(Throughput::Elements(VMS as u64));
    g.bench_function("objects", |b| {
        b.iter(|| codec::decode_retrieve(std::hint::black_box(&xml), "RetrievePropertiesEx"))
    });
    g.bench_function("tree_only", |b| b.iter(|| codec::parse_tree(std::hint::black_box(&xml))));
    g.bench_function("raw_events", |b| {
        b.iter(|| {
            let mut r = quick_xml::NsReader::from_reader(&xml[..]);
            let mut buf = Vec::new();
            let mut n = 0;
            loop {
                match r.read_resolved_event_into(&mut buf) {
                    Ok((_, quick_xml::events::Event::Eof)) | Err(_) => break,
                    _ => n += 1,
                }
                buf.clear();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
