//! `/metrics` of a live agent (the real binary, the vCenter simulator, a memory switch) read as
//! Prometheus reads it: OpenMetrics by default and to Prometheus's own `Accept` header, the
//! classic text format to a client that asks for `text/plain`, and the classic scrape linted
//! by Prometheus's own `promtool check metrics` (Debian's `prometheus` package). Both formats
//! carry the same families, each with `# HELP` and `# TYPE`, counters as counters.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use support::netfold::{Netfold, STEP};

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn scrape(base: &str, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("scrape /metrics");
    assert!(resp.status().is_success(), "{}", resp.status());
    let ct = resp.headers().get("content-type").expect("content type").to_str().unwrap().to_string();
    (ct, resp.text().await.unwrap())
}

/// Family name → (help, type), from the `# HELP` and `# TYPE` lines; panics on a sample whose
/// family has neither (for counters and histograms the family is the name before the suffix).
fn families(text: &str, counter_suffix_in_family: bool) -> BTreeMap<String, (String, String)> {
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').expect("help text");
            help.insert(name.to_string(), h.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').expect("type");
            types.insert(name.to_string(), t.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = [name.to_string()]
                .into_iter()
                .chain(
                    ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .filter_map(|s| name.strip_suffix(s))
                        .map(String::from),
                )
                .find(|f| types.contains_key(f))
                .unwrap_or_else(|| panic!("sample `{name}` has no # TYPE:\n{text}"));
            let t = &types[&family];
            if t == "counter" {
                assert!(name.ends_with("_total"), "counter sample `{name}` lacks _total");
                assert_eq!(family.ends_with("_total"), counter_suffix_in_family, "counter family `{family}`");
            }
        }
    }
    assert_eq!(help.keys().collect::<Vec<_>>(), types.keys().collect::<Vec<_>>(), "every family helped and typed");
    help.into_iter().map(|(name, h)| (name.clone(), (h, types[&name].clone()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_is_openmetrics_to_prometheus_and_the_classic_format_passes_promtool() {
    let vc =
        sims::vsphere::Simulator::start(sims::vsphere::SimOptions::lab("tor1", "Ethernet1/")).await.expect("vc sim");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[hypervisor]]\nname = \"vc-east\"\nkind = \"vmware\"\n\
             url = \"{}\"\nallow_plaintext = true\nuser = \"{}\"\npassword = {{ password_env = \"METRICS_VC_PASSWORD\" }}\n\
             [[switch]]\nname = \"tor1\"\nkind = \"memory\"\n",
            data.display(),
            vc.url(),
            vc.user()
        ),
    )
    .unwrap();
    let mut nf = Netfold::start(&config, dir.path().join("run.log"), &[("METRICS_VC_PASSWORD", vc.password())]);
    let base = nf.http().await;
    nf.wait_line("tor1 Ethernet1/1: added VLAN 100").await;
    // The switch-operation counters come from the switch audit log, read by the metrics
    // subscriber after the reconciler wrote it: wait (bounded) for the add to be counted.
    let applied = r#"netfold_switch_operations_total{switch="tor1",op="add",result="applied"}"#;
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let (_, text) = scrape(&base, Some("text/plain")).await;
        if text.contains(applied) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the add was never counted within {STEP:?}:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Two scrapes at once, one per format: each is whole and consistent.
    let ((om_ct, om), (prom_ct, _), (text_ct, text)) =
        tokio::join!(scrape(&base, None), scrape(&base, Some(PROMETHEUS_ACCEPT)), scrape(&base, Some("text/plain")));
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    assert_eq!(om_ct, openmetrics);
    assert_eq!(prom_ct, openmetrics);
    assert_eq!(text_ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(!text.contains("# EOF"), "{text}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) on PATH");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {}\n{said}\n{text}", out.status);

    let classic = families(&text, true);
    let open = families(&om, false);
    let renamed: BTreeMap<String, (String, String)> = open
        .into_iter()
        .map(|(name, (h, t))| (if t == "counter" { format!("{name}_total") } else { name }, (h, t)))
        .collect();
    assert_eq!(classic, renamed, "the same families, help and types in both formats");
    for (name, t) in [
        ("netfold_events_appended_total", "counter"),
        ("netfold_adapter_logins_total", "counter"),
        ("netfold_reconcile_cycles_total", "counter"),
        ("netfold_switch_operations_total", "counter"),
        ("netfold_append_latency_seconds", "histogram"),
        ("netfold_log_head", "gauge"),
        ("netfold_hypervisor_status", "gauge"),
    ] {
        assert_eq!(classic.get(name).map(|(_, t)| t.as_str()), Some(t), "{name}:\n{text}");
    }
    assert!(text.contains(applied), "{text}");
    nf.stop().await;
}
