//! The inventory tree above the simulator's objects, as vCenter lays it out: the root folder
//! holds one datacenter; its host folder holds one standalone `ComputeResource` per host, its VM
//! folder every VM, its network folder the standard `Network`s (one per port group name) and
//! the distributed port groups and switches. Derived from the world on every request (nothing
//! here changes on its own), served to `Fetch` and to single-object retrieves; container views
//! and property filters walk the world's objects only.

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::world::{network_id, SimNet, World, DVPG, DVS, HOST, VM};

pub const FOLDER: &str = "Folder";
pub const DATACENTER: &str = "Datacenter";
pub const COMPUTE: &str = "ComputeResource";
pub const NETWORK: &str = "Network";

/// The service content's `rootFolder`.
pub const ROOT_FOLDER: &str = "group-d1";
const DATACENTER_ID: &str = "datacenter-2";
const VM_FOLDER: &str = "group-v3";
const HOST_FOLDER: &str = "group-h4";
const NETWORK_FOLDER: &str = "group-n5";

/// The paths served on the tree's types.
pub const SERVED: [(&str, &[&str]); 4] = [
    (FOLDER, &["name", "parent", "childEntity"]),
    (DATACENTER, &["name", "parent", "hostFolder", "vmFolder", "networkFolder"]),
    (COMPUTE, &["name", "parent", "host"]),
    (NETWORK, &["name", "parent", "host", "vm"]),
];

/// The `ComputeResource` a host stands in.
pub fn compute_id(host: &str) -> String {
    format!("domain-{host}")
}

/// The folder a world object's `parent` is.
pub fn parent_of(kind: &str, id: &str) -> Option<(String, String)> {
    match kind {
        HOST => Some(moref(COMPUTE, &compute_id(id))),
        VM => Some(moref(FOLDER, VM_FOLDER)),
        DVPG | DVS => Some(moref(FOLDER, NETWORK_FOLDER)),
        _ => None,
    }
}

/// Whether the tree holds this object.
pub fn exists(world: &World, kind: &str, id: &str) -> bool {
    match kind {
        FOLDER => [ROOT_FOLDER, VM_FOLDER, HOST_FOLDER, NETWORK_FOLDER].contains(&id),
        DATACENTER => id == DATACENTER_ID,
        COMPUTE => id.strip_prefix("domain-").is_some_and(|h| world.hosts.contains_key(h)),
        NETWORK => standard_networks(world).iter().any(|n| network_id(n) == id),
        _ => false,
    }
}

/// One property of a tree object, as the world renders its own (`None`: not held or not served).
pub fn render(world: &World, kind: &str, id: &str, path: &str) -> Option<(String, String)> {
    if !exists(world, kind, id) {
        return None;
    }
    let string = |s: &str| ("xsd:string".to_string(), escape(s).into_owned());
    Some(match (kind, path) {
        (FOLDER, "name") => string(match id {
            ROOT_FOLDER => "Datacenters",
            VM_FOLDER => "vm",
            HOST_FOLDER => "host",
            _ => "network",
        }),
        (FOLDER, "parent") if id == ROOT_FOLDER => return None,
        (FOLDER, "parent") => moref(DATACENTER, DATACENTER_ID),
        (FOLDER, "childEntity") => morefs(match id {
            ROOT_FOLDER => vec![(DATACENTER, DATACENTER_ID.to_string())],
            VM_FOLDER => world.vms.keys().map(|v| (VM, v.clone())).collect(),
            HOST_FOLDER => world.hosts.keys().map(|h| (COMPUTE, compute_id(h))).collect(),
            _ => {
                let mut all: Vec<(&str, String)> =
                    standard_networks(world).iter().map(|n| (NETWORK, network_id(n))).collect();
                all.extend(world.dvpgs.keys().map(|p| (DVPG, p.clone())));
                all.extend(world.dvs.keys().map(|s| (DVS, s.clone())));
                all
            }
        }),
        (DATACENTER, "name") => string("netfold-sim"),
        (DATACENTER, "parent") => moref(FOLDER, ROOT_FOLDER),
        (DATACENTER, "hostFolder") => moref(FOLDER, HOST_FOLDER),
        (DATACENTER, "vmFolder") => moref(FOLDER, VM_FOLDER),
        (DATACENTER, "networkFolder") => moref(FOLDER, NETWORK_FOLDER),
        (COMPUTE, "name") => string(&world.hosts.get(id.strip_prefix("domain-")?)?.name),
        (COMPUTE, "parent") => moref(FOLDER, HOST_FOLDER),
        (COMPUTE, "host") => morefs(vec![(HOST, id.strip_prefix("domain-")?.to_string())]),
        (NETWORK, "name") => string(id.strip_prefix("network-")?),
        (NETWORK, "parent") => moref(FOLDER, NETWORK_FOLDER),
        (NETWORK, "host") => {
            let name = id.strip_prefix("network-")?;
            morefs(
                world
                    .hosts
                    .iter()
                    .filter(|(_, h)| h.portgroups.iter().any(|(pg, _)| pg == name))
                    .map(|(hid, _)| (HOST, hid.clone()))
                    .collect(),
            )
        }
        (NETWORK, "vm") => {
            let name = id.strip_prefix("network-")?;
            let on = |n: &SimNet| matches!(n, SimNet::Standard(pg) if pg == name);
            morefs(
                world
                    .vms
                    .iter()
                    .filter(|(_, v)| v.nics.iter().any(|n| on(&n.network)))
                    .map(|(vid, _)| (VM, vid.clone()))
                    .collect(),
            )
        }
        _ => return None,
    })
}

/// Every standard port group name on any host, once.
fn standard_networks(world: &World) -> Vec<String> {
    let mut names: Vec<String> =
        world.hosts.values().flat_map(|h| h.portgroups.iter().map(|(n, _)| n.clone())).collect();
    names.sort();
    names.dedup();
    names
}

/// A moref value: `ManagedObjectReference:TYPE` tells [`super::world::value_xml`] its type.
pub fn moref(kind: &str, id: &str) -> (String, String) {
    (format!("ManagedObjectReference:{kind}"), escape(id).into_owned())
}

fn morefs(items: Vec<(&str, String)>) -> (String, String) {
    let mut s = String::new();
    for (kind, id) in items {
        let _ = write!(
            s,
            "<ManagedObjectReference type=\"{kind}\" xsi:type=\"ManagedObjectReference\">{}</ManagedObjectReference>",
            escape(&id)
        );
    }
    ("ArrayOfManagedObjectReference".into(), s)
}
