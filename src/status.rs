//! `netfold status`: one screen an operator reads, like a switch's `show vmtracker status`.
//! The agent collects it ([`collect`], served as `/status`) from what it already keeps — each
//! adapter's health, the projected state, each reconciler's counters, the switch-operation
//! counts of the metrics tap and the ownership ledger — and the CLI renders it ([`render`]).
//! Only a running agent knows sessions and switches, so there is no data-directory form: with
//! no agent answering, `status` says so and fails.

use std::time::Duration;

use anyhow::{Context, Result};
use engine::clock::{Clock, SystemClock};
use engine::projector::Status;
use engine::{HypervisorId, UnixMs};
use replay::point::format_time;
use serde::{Deserialize, Serialize};

use crate::cli::AgentArgs;
use crate::cluster::ClusterView;
use crate::source::Agent;

/// What `/status` adds to the metrics and the state.
pub struct Sources {
    /// The engine's config: each hypervisor's grace period.
    pub engine: engine::config::Config,
    /// The ownership ledger table (every switch's owned VLANs).
    pub ledger: store::Table,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// Unix ms the agent collected this.
    pub at: UnixMs,
    /// The event log's head.
    pub log_head: u64,
    /// Since when appends to the event log fail (`None` while they work).
    pub log_unavailable_since: Option<UnixMs>,
    /// Since when an append has had no answer from the event log (`None` while it answers).
    #[serde(default)]
    pub log_unanswered_since: Option<UnixMs>,
    pub hypervisors: Vec<HypervisorStatus>,
    pub switches: Vec<SwitchStatus>,
    /// With instances sharing a PostgreSQL store: what this one holds, and who holds what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HypervisorStatus {
    pub name: HypervisorId,
    /// VMware or Xen-Citrix.
    pub kind: String,
    pub endpoint: String,
    /// The adapter's session: connecting, live, retrying or failing.
    pub session: String,
    /// What the log holds: live, lost or expired (`None` before the first event).
    pub status: Option<Status>,
    /// Unix ms of the last answer from the hypervisor.
    pub last_contact: Option<UnixMs>,
    /// While lost: ms until the grace period ends and its VLANs are removed.
    pub grace_remaining_ms: Option<u64>,
    pub grace_ms: u64,
    pub facts: usize,
    /// Facts a held mass removal would remove, and since when it is held.
    pub held: Option<engine::projector::Held>,
    /// The last failure, with its causes (cleared once a session is live).
    pub error: Option<String>,
    /// Failed attempts since the last steady session.
    pub attempt: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchStatus {
    pub name: String,
    /// Unix ms the last reconcile cycle ended.
    pub last_cycle: Option<UnixMs>,
    pub cycles: u64,
    /// Whether the last cycle failed, and how many in a row.
    pub failing: bool,
    pub consecutive_failures: u64,
    /// VLAN adds sent without a reply yet (to be settled by reading the switch).
    pub pending: u64,
    /// Operations that failed since the agent started.
    pub failed_operations: u64,
    /// VLAN memberships netfold owns on the switch (the ledger).
    pub owned_vlans: Option<usize>,
    /// Cycles triggered by drift on the switch since the agent started.
    pub drift_repairs: u64,
    /// Desired VLANs on ports whose names the switch refuses.
    pub refused_names: u64,
    pub error: Option<String>,
}

/// The status of the running agent.
pub fn collect(api: &crate::http::Api) -> StatusView {
    use store::Log;
    let now = SystemClock.now();
    let metrics = &api.metrics;
    let hypervisors = api.state.read(|st| {
        metrics
            .adapters()
            .into_iter()
            .map(|(id, kind, h)| {
                let s = st.status(&id);
                let grace = api.status.engine.grace_for(&id);
                let grace_remaining_ms = match s.as_ref().map(|s| s.status) {
                    Some(Status::Lost { since }) => Some((since + grace.as_millis() as u64).saturating_sub(now)),
                    _ => None,
                };
                let session =
                    serde_json::to_value(h.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                HypervisorStatus {
                    kind: kind.to_string(),
                    endpoint: h.endpoint,
                    session,
                    status: s.as_ref().map(|s| s.status),
                    last_contact: h.last_contact_ms,
                    grace_remaining_ms,
                    grace_ms: grace.as_millis() as u64,
                    facts: st.facts_of(&id).map_or(0, |f| f.len()),
                    held: s.and_then(|s| s.held),
                    error: h.last_error,
                    attempt: h.attempt,
                    name: id,
                }
            })
            .collect()
    });
    let switches = metrics
        .switch_stats()
        .into_iter()
        .map(|(name, stats)| {
            use std::sync::atomic::Ordering::Relaxed;
            let h = stats.health();
            let ledger = engine::reconciler::Ledger::new(api.status.ledger.clone(), name.clone());
            SwitchStatus {
                last_cycle: h.last_cycle_at,
                cycles: stats.cycles.load(Relaxed),
                failing: h.failing,
                consecutive_failures: h.consecutive_failures,
                pending: h.unresolved_intents,
                failed_operations: metrics.failed_operations(&name),
                owned_vlans: ledger.owned_count().ok(),
                drift_repairs: stats.drift_cycles.load(Relaxed),
                refused_names: h.refused_names,
                error: h.failing.then_some(h.last_error).flatten(),
                name,
            }
        })
        .collect();
    StatusView {
        at: now,
        log_head: api.events.head(),
        log_unavailable_since: metrics.engine().and_then(|m| m.log_unavailable_since()),
        log_unanswered_since: metrics.engine().and_then(|m| m.log_unanswered_since(now)),
        hypervisors,
        switches,
        cluster: metrics.cluster().map(|a| a.view()),
    }
}

/// `netfold status [--json]`: asks the running agent.
pub async fn run(args: &AgentArgs, json: bool) -> Result<()> {
    let agent = Agent::from_args(args)?;
    let view: StatusView = agent
        .get("/status", &[])
        .await
        .context("`status` asks the running agent (sessions and switches live only there)")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        outln!("{}", render(&view).trim_end());
    }
    Ok(())
}

/// A duration for people, to the second: `2m 05s`.
fn span(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// How long before `now` a time was: `12s ago`.
fn ago(now: UnixMs, t: Option<UnixMs>) -> String {
    match t {
        Some(t) if t <= now => format!("{} ago", span(now - t)),
        Some(t) => format_time(t),
        None => "never".to_string(),
    }
}

/// The screen: a hypervisor table, a switch table, then every error in full.
pub fn render(v: &StatusView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let log = match (v.log_unanswered_since, v.log_unavailable_since) {
        (Some(t), _) => format!("NOT ANSWERING AN APPEND sent at {}", format_time(t)),
        (None, Some(t)) => format!("REFUSING APPENDS since {}", format_time(t)),
        (None, None) => "taking appends".to_string(),
    };
    let _ = writeln!(out, "netfold status at {} — event log head {}, {log}", format_time(v.at), v.log_head);
    if let Some(c) = &v.cluster {
        let _ = writeln!(
            out,
            "instance {} ({}), one of {} live, takes at most {} piece(s) of work",
            c.instance, c.holder, c.live_instances, c.fair_share
        );
        for w in &c.work {
            let by = match &w.holder {
                Some(h) => format!(
                    "{h} (token {}, {} left)",
                    w.token,
                    humantime::format_duration(Duration::from_millis(w.remaining_ms))
                ),
                None => "NOBODY".to_string(),
            };
            let _ = writeln!(out, "  {:<28} held by {by}", w.lease);
        }
    }
    let _ = writeln!(out, "\nHypervisors:");
    let _ = writeln!(
        out,
        "  {:<14} {:<10} {:<10} {:<9} {:<14} {:<14} {:>7}  {:<8} endpoint",
        "name", "kind", "session", "log", "last contact", "grace left", "facts", "held"
    );
    if v.hypervisors.is_empty() {
        let _ = writeln!(out, "  (none configured)");
    }
    let mut errors = Vec::new();
    for h in &v.hypervisors {
        let log = match h.status {
            Some(Status::Live) => "live",
            Some(Status::Lost { .. }) => "LOST",
            Some(Status::Expired) => "expired",
            None => "-",
        };
        let grace = h.grace_remaining_ms.map_or("-".to_string(), span);
        let held = h.held.map_or("-".to_string(), |held| held.would_remove.to_string());
        let _ = writeln!(
            out,
            "  {:<14} {:<10} {:<10} {:<9} {:<14} {:<14} {:>7}  {:<8} {}",
            h.name.to_string(),
            h.kind,
            h.session,
            log,
            ago(v.at, h.last_contact),
            grace,
            h.facts,
            held,
            h.endpoint
        );
        if let Some(held) = h.held {
            errors.push(format!(
                "hypervisor {}: a removal of {} facts is held since {} (seq {}): `netfold release --hypervisor {}` lets it through",
                h.name,
                held.would_remove,
                format_time(held.since),
                held.seq,
                h.name
            ));
        }
        if let Some(e) = &h.error {
            errors.push(format!("hypervisor {} (attempt {}): {e}", h.name, h.attempt));
        }
    }
    let _ = writeln!(out, "\nSwitches:");
    let _ = writeln!(
        out,
        "  {:<14} {:<14} {:>7} {:<9} {:>7} {:>6} {:>6} {:>6}",
        "name", "last cycle", "cycles", "state", "pending", "failed", "owned", "drift"
    );
    if v.switches.is_empty() {
        let _ = writeln!(out, "  (none configured)");
    }
    for s in &v.switches {
        let state = if s.failing { format!("FAILING×{}", s.consecutive_failures) } else { "ok".to_string() };
        let owned = s.owned_vlans.map_or("?".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  {:<14} {:<14} {:>7} {:<9} {:>7} {:>6} {:>6} {:>6}",
            s.name,
            ago(v.at, s.last_cycle),
            s.cycles,
            state,
            s.pending,
            s.failed_operations,
            owned,
            s.drift_repairs
        );
        if let Some(e) = &s.error {
            errors.push(format!("switch {}: {e}", s.name));
        }
        if s.refused_names > 0 {
            errors.push(format!(
                "switch {}: {} desired VLAN(s) on ports whose names it refuses (`netfold log --switch {} --kind refused`)",
                s.name, s.refused_names, s.name
            ));
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "\nNeeds attention:");
        for e in errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_names_a_lost_hypervisor_its_grace_and_a_failing_switch() {
        let v = StatusView {
            at: 1_000_000,
            log_head: 42,
            log_unavailable_since: None,
            log_unanswered_since: None,
            hypervisors: vec![HypervisorStatus {
                name: HypervisorId::new("vc-east").unwrap(),
                kind: "VMware".into(),
                endpoint: "https://vc/sdk".into(),
                session: "retrying".into(),
                status: Some(Status::Lost { since: 990_000 }),
                last_contact: Some(990_000),
                grace_remaining_ms: Some(170_000),
                grace_ms: 180_000,
                facts: 12,
                held: None,
                error: Some("connection refused".into()),
                attempt: 3,
            }],
            switches: vec![SwitchStatus {
                name: "tor1".into(),
                last_cycle: Some(995_000),
                cycles: 7,
                failing: true,
                consecutive_failures: 2,
                pending: 1,
                failed_operations: 4,
                owned_vlans: Some(9),
                drift_repairs: 1,
                refused_names: 0,
                error: Some("timeout".into()),
            }],
            cluster: Some(ClusterView {
                instance: "nf-b".into(),
                holder: "nf-b/0badcafe".into(),
                live_instances: 2,
                fair_share: 1,
                holds: vec![crate::cluster::HeldView { lease: "switch/tor1".into(), token: 3, remaining_ms: 9_000 }],
                work: vec![
                    crate::cluster::LeaseView {
                        lease: "switch/tor1".into(),
                        holder: Some("nf-b/0badcafe".into()),
                        token: 3,
                        remaining_ms: 9_000,
                    },
                    crate::cluster::LeaseView {
                        lease: "hypervisor/vc-east".into(),
                        holder: None,
                        token: 2,
                        remaining_ms: 0,
                    },
                ],
            }),
        };
        let text = render(&v);
        for want in [
            "vc-east",
            "LOST",
            "10s ago",
            "2m 50s",
            "FAILING×2",
            "switch tor1: timeout",
            "attempt 3",
            "instance nf-b (nf-b/0badcafe), one of 2 live, takes at most 1 piece(s) of work",
            "switch/tor1                  held by nf-b/0badcafe (token 3, 9s left)",
            "hypervisor/vc-east           held by NOBODY",
        ] {
            assert!(text.contains(want), "`{want}` missing from:\n{text}");
        }
        let back: StatusView = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(render(&back), text, "the JSON carries everything the screen shows");
    }
}
