//! The dashboard and the alert rules operators install (packaging/grafana/netfold.json,
//! packaging/prometheus/netfold-rules.yml) against what netfold really exports: every
//! `netfold_…` name either file uses is a series a live `netfold run` serves on `/metrics`, in
//! the OpenMetrics and in the classic text format; and the files are what Prometheus accepts —
//! the rules pass `promtool check rules` and their unit tests (`promtool test rules`), every
//! dashboard query parses as PromQL. promtool is Debian's `prometheus` package
//! (`scripts/test` installs it); a missing one fails.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use support::netfold::{text, Netfold, Sim, STEP};

const RULES: &str = "packaging/prometheus/netfold-rules.yml";
const RULE_TESTS: &str = "packaging/prometheus/netfold-rules.test.yml";
const DASHBOARD: &str = "packaging/grafana/netfold.json";

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `netfold_…` word in `text` (a metric name: nothing else in these files is spelt so).
fn netfold_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("netfold_") {
        let before = rest[..at].chars().next_back();
        let name: String = rest[at..].chars().take_while(|&c| word(c)).collect();
        if !before.is_some_and(word) {
            names.insert(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

/// The series names a scrape makes queryable in Prometheus: every sample's name, and for a
/// family without samples yet the names its `# TYPE` gives it — a counter's `_total` (OpenMetrics
/// names the family without it, the classic format with it), a histogram's `_bucket`, `_sum` and
/// `_count`, a gauge's own.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let (name, kind) = typed.split_once(' ').unwrap_or((typed, ""));
            match kind {
                "counter" => {
                    names.insert(format!("{}_total", name.strip_suffix("_total").unwrap_or(name)));
                }
                "histogram" => names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn exported_names_follow_both_exposition_formats() {
    let openmetrics = "# HELP netfold_x Things.\n# TYPE netfold_x counter\n\
                       # HELP netfold_h Seconds.\n# TYPE netfold_h histogram\n\
                       netfold_h_bucket{le=\"+Inf\"} 0\n# TYPE netfold_g gauge\nnetfold_g{a=\"b\"} 1\n# EOF\n";
    let classic = "# HELP netfold_x_total Things.\n# TYPE netfold_x_total counter\nnetfold_x_total{k=\"v\"} 1\n";
    let want: BTreeSet<String> =
        ["netfold_x_total", "netfold_h_bucket", "netfold_h_sum", "netfold_h_count", "netfold_g"]
            .map(String::from)
            .into();
    assert_eq!(exported(openmetrics), want);
    assert_eq!(exported(classic), ["netfold_x_total".to_string()].into());
    // A counter's family name is not a series Prometheus stores.
    assert!(!exported(openmetrics).contains("netfold_x"));
}

#[test]
fn names_are_whole_words() {
    let names = netfold_names("rate(netfold_a_total[5m]) / x_netfold_b + netfold_c{l=\"netfold-d\"} `netfold log`");
    assert_eq!(names, ["netfold_a_total".to_string(), "netfold_c".to_string()].into());
}

/// A live agent: a XenServer pool simulator and a memory switch, learnt and reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported_by_a_running_agent() {
    let mut used = netfold_names(&read(RULES));
    used.extend(netfold_names(&read(DASHBOARD)));
    for central in ["netfold_hypervisor_status", "netfold_held_removals", "netfold_append_latency_seconds_bucket"] {
        assert!(used.contains(central), "{central} not found in the rules or the dashboard: {used:?}");
    }

    let sim = Sim::start("xen", "tor1:Ethernet", "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[[hypervisor]]
name = "xen1"
kind = "xen"
url = "{url}"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "MONITORING_XEN_PASSWORD" }}
[[switch]]
name = "tor1"
kind = "memory"
"#,
            data = dir.path().join("data").display(),
            url = sim.url,
            user = sim.user,
        ),
    )
    .unwrap();
    let mut nf =
        Netfold::start(&config, dir.path().join("stderr"), &[("MONITORING_XEN_PASSWORD", sim.password.clone())]);
    let base = nf.http().await;
    let http = reqwest::Client::new();
    let scrape = |accept: &'static str| {
        let (http, url) = (http.clone(), format!("{base}/metrics"));
        async move {
            let r = http.get(url).header("accept", accept).send().await.expect("GET /metrics");
            assert!(r.status().is_success(), "/metrics answered {}", r.status());
            r.text().await.expect("/metrics body")
        }
    };
    for accept in ["application/openmetrics-text; version=1.0.0", "text/plain; version=0.0.4"] {
        // Families with labels have series once the hypervisor is learnt and the switch reconciled.
        let deadline = Instant::now() + STEP;
        loop {
            let body = scrape(accept).await;
            let missing: Vec<_> = used.difference(&exported(&body)).cloned().collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics (Accept: {accept}) does not export {missing:?}, which the rules or the dashboard use:\n{body}\n{}",
                nf.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    nf.stop().await;
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run promtool (Debian's `prometheus` package; scripts/test installs it)")
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let out = promtool(&args);
        assert!(out.status.success(), "promtool {args:?}:\n{}{}", text(&out.stdout), text(&out.stderr));
    }
}

/// Every panel query, its Grafana variables given values, checked as a recording rule.
#[test]
fn every_dashboard_query_is_promql() {
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| exprs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    let panels = dashboard["panels"].as_array().expect("panels").iter().filter(|p| p["type"] != "row").count();
    assert!(queries.len() >= panels, "{} queries for {panels} panels", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q.replace("$__rate_interval", "5m").replace("$hypervisor", ".*").replace("$switch", ".*");
        assert!(!q.contains('$'), "a Grafana variable this test does not know in `{q}`");
        rules.push_str(&format!("      - record: dashboard:query_{i}\n        expr: {}\n", serde_json::json!(q)));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(out.status.success(), "promtool check rules:\n{}{}\n{rules}", text(&out.stdout), text(&out.stderr));
}
