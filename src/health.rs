//! What `/healthz` says: `200 {"status":"ok",…}` only while everything works; otherwise `503`
//! with `"status":"degraded"` and one reason per thing that does not — an adapter that is not
//! live (connecting, retrying, failing, with its last error), a hypervisor the log holds as
//! lost, a held mass removal, a switch whose last reconcile cycle failed or that has refused port
//! names, a switch whose discovery fails, an uplink whose port sources disagree, an event log that
//! refuses appends (disk full, IO error) or leaves one unanswered (a store that hangs), and for
//! instances on PostgreSQL (`crate::cluster`) a lease that may be lost, leases that cannot be
//! read, work no instance holds. The body also
//! lists every adapter's and switch's health, so one request answers "what is wrong, and since
//! when".

use engine::clock::{Clock, SystemClock};
use engine::projector::Status;
use engine::runtime::SharedState;
use serde_json::{json, Value};

use crate::metrics::Metrics;

/// The reasons netfold is not well, in a stable order (adapters, then the log's view, then
/// switches).
pub fn reasons(metrics: &Metrics, state: &SharedState) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = metrics.cluster() {
        out.extend(c.reasons());
    }
    for (id, kind, h) in metrics.adapters() {
        let state = serde_json::to_value(h.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        match (&h.state, &h.last_error) {
            (adapters::driver::LinkState::Live, _) => {}
            (_, Some(e)) => out.push(format!("hypervisor {id} ({kind}): adapter {state} (attempt {}): {e}", h.attempt)),
            (_, None) => out.push(format!("hypervisor {id} ({kind}): adapter {state}: no answer yet")),
        }
    }
    if let Some(since) = metrics.engine().and_then(|m| m.log_unavailable_since()) {
        out.push(format!(
            "the event log refuses appends since {} (disk full or IO error): observations are held back and retried every second",
            replay::point::format_time(since)
        ));
    }
    if let Some(since) = metrics.engine().and_then(|m| m.log_unanswered_since(SystemClock.now())) {
        out.push(format!(
            "the event log has not answered an append sent at {} (a store that hangs: a stalled disk, or a database \
             that does not answer): observations are held back until it does",
            replay::point::format_time(since)
        ));
    }
    state.read(|s| {
        for (id, st) in s.hypervisors() {
            if let Status::Lost { since } = st.status {
                out.push(format!(
                    "hypervisor {id}: lost since {}; learnt information kept until the grace period ends",
                    replay::point::format_time(since)
                ));
            }
            if let Some(held) = st.held {
                out.push(format!(
                    "hypervisor {id}: a removal of {} facts is held back by the mass-removal guard since {} \
                     (seq {}); `netfold release --hypervisor {id}` lets it through",
                    held.would_remove,
                    replay::point::format_time(held.since),
                    held.seq
                ));
            }
        }
    });
    for (name, st) in metrics.discovery() {
        if let Some(e) = st.failure() {
            out.push(format!(
                "switch {name}: discovery (MAC table, LLDP, bonds) failing: {e}; host NICs it tied keep their last ports"
            ));
        }
    }
    state.read(|s| {
        for (id, _) in s.hypervisors() {
            for d in s.disagreements_of(id) {
                let said: Vec<String> = d.opinions.iter().map(|(s, p)| format!("{s}: {p}")).collect();
                out.push(format!(
                    "hypervisor {id}: uplink {}/{}: port sources disagree ({}); the first is applied",
                    d.host,
                    d.nic,
                    said.join(", ")
                ));
            }
        }
    });
    for (name, h) in metrics.switch_health() {
        if h.failing {
            let since = h.failing_since.map(replay::point::format_time).unwrap_or_default();
            let error = h.last_error.as_deref().unwrap_or("no error text");
            out.push(format!(
                "switch {name}: reconcile failing since {since} ({} cycle(s) in a row): {error}",
                h.consecutive_failures
            ));
        }
        if h.refused_names > 0 {
            out.push(format!(
                "switch {name}: {} desired VLAN(s) are on ports whose names the switch refuses (nothing is sent \
                 for them; `netfold log --switch {name} --kind refused` says which and why)",
                h.refused_names
            ));
        }
    }
    out
}

/// The `/healthz` answer: whether all is well, and the JSON body.
pub fn report(metrics: &Metrics, state: &SharedState) -> (bool, Value) {
    let reasons = reasons(metrics, state);
    let adapters: serde_json::Map<String, Value> = metrics
        .adapters()
        .into_iter()
        .map(|(id, kind, h)| {
            let mut v = serde_json::to_value(&h).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), json!(kind.to_string()));
            }
            (id.to_string(), v)
        })
        .collect();
    let switches: serde_json::Map<String, Value> = metrics
        .switch_health()
        .into_iter()
        .map(|(name, h)| (name, serde_json::to_value(&h).unwrap_or(Value::Null)))
        .collect();
    let ok = reasons.is_empty();
    let status = if ok { "ok" } else { "degraded" };
    let mut body = json!({ "status": status, "reasons": reasons, "hypervisors": adapters, "switches": switches });
    if let Some(a) = metrics.cluster() {
        body["cluster"] = json!(a.view());
    }
    (ok, body)
}
