//! The audit commands against a running agent: while `netfold run` holds the data directory
//! (sled lets one process open it), `why`, `state --at`, `log`, `log --switch`, `diff`, `verify`
//! and `status` run in other processes and answer from the agent's HTTP API — found through the
//! config's `[http]` section, with its bearer token — and, once the agent has stopped, the same
//! commands read the directory itself and print the same thing. Every answer the agent gives
//! on the way conforms to docs/openapi.json: its status code and media type are documented for
//! the route, and its body validates against the documented schema (`jsonschema`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::netfold::{free_port, netfold, text, Netfold, Sim, STEP};

/// The stdout of a command that must succeed.
fn ok(args: &[&str]) -> String {
    let out = netfold(args);
    assert!(out.status.success(), "netfold {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn write_config(dir: &Path, sim: &Sim, port: u16) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let token = dir.join("http.token");
    std::fs::write(&token, "s3cret-of-the-operator\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("netfold.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:{port}"
token_file = "{token}"
[[hypervisor]]
name = "xen1"
kind = "xen"
url = "{url}"
allow_plaintext = true
user = "{user}"
password = {{ password_env = "LIVE_AUDIT_XEN_PASSWORD" }}
[[switch]]
name = "tor1"
kind = "memory"
"#,
            data = dir.join("data").display(),
            token = token.display(),
            url = sim.url,
            user = sim.user,
        ),
    )
    .unwrap();
    config
}

/// Waits until `cond` holds of the output of `netfold ARGS` (which must succeed).
fn wait_for(args: &[&str], what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let out = netfold(args);
        let stdout = text(&out.stdout);
        if out.status.success() && cond(&stdout) {
            return stdout;
        }
        assert!(Instant::now() < deadline, "no {what} within {STEP:?}:\n{stdout}{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// docs/openapi.json.
fn openapi() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A validator for `schema` (a schema object of the document): the document is the root, so its
/// `#/components/schemas/…` references resolve.
fn validator(doc: &serde_json::Value, schema: &serde_json::Value) -> jsonschema::Validator {
    let mut root = doc.clone();
    for (k, v) in schema.as_object().expect("a schema object") {
        root[k] = v.clone();
    }
    jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&root).expect("a valid schema")
}

/// Asks the agent `METHOD path?query` with `token` and checks the answer against the document:
/// the status is documented for the route, the media type for the status, and the body (each
/// line of a JSON-lines body) validates against its schema. Returns the status and the body.
async fn conforms(
    doc: &serde_json::Value,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, &str)],
) -> (u16, String) {
    let resp = reqwest::Client::new()
        .request(method.clone(), format!("{base}{path}"))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let media = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_string();
    let body = resp.text().await.unwrap();
    let what = format!("{method} {path}?{query:?} answered {status} ({media})");
    let op = &doc["paths"][path][method.as_str().to_ascii_lowercase()];
    assert!(op.is_object(), "{what}: the route is not in docs/openapi.json");
    let response = &op["responses"][status.to_string()];
    assert!(response.is_object(), "{what}: status {status} is not documented for the route:\n{body}");
    let schema = &response["content"][&media]["schema"];
    assert!(schema.is_object(), "{what}: media type {media} is not documented for status {status}");
    let values: Vec<serde_json::Value> = match media.as_str() {
        "application/json" => vec![serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}:\n{body}"))],
        "application/x-ndjson" => body.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect(),
        _ => vec![],
    };
    let v = validator(doc, schema);
    for value in &values {
        let errors: Vec<String> = v.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: does not validate against docs/openapi.json:\n{errors:#?}\n{value:#}");
    }
    (status, body)
}

/// `verify`'s line without the snapshot it compared (the agent saves one more as it stops).
fn verified(line: &str) -> String {
    let (head, rest) = line.split_once("replay deterministic (").unwrap_or_else(|| panic!("not a verify line: {line}"));
    let state = rest.rsplit_once("state ").map_or("", |(_, s)| s);
    format!("{head}… state {state}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_commands_answer_from_a_running_agent_as_from_the_stopped_directory() {
    let sim = Sim::start("xen", "tor1:Ethernet", "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &sim, port);
    let c = config.to_str().unwrap();
    let mut nf =
        Netfold::start(&config, dir.path().join("stderr"), &[("LIVE_AUDIT_XEN_PASSWORD", sim.password.clone())]);
    let base = nf.http().await;
    assert_eq!(base, format!("http://127.0.0.1:{port}"), "the agent listens where the config says");

    // Learnt, and the switch written: the desired state has ports, the switch audit entries.
    let state = wait_for(&["state", "-c", c, "--json"], "learnt state", |s| s.contains("\"vlan\""));
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    wait_for(&["log", "-c", c, "--switch", "tor1"], "switch audit entries", |s| s.contains("applied"));
    let seq = state["seq"].as_u64().unwrap().to_string();
    let first = &state["ports"][0];
    let (port_name, vlan) = (first["port"].as_str().unwrap().to_string(), first["vlans"][0]["vlan"].to_string());

    // What an operator runs beside the agent; each with the config only (the directory is in
    // use, so the agent at [http] listen is asked, with the token from [http] token_file).
    let commands: Vec<Vec<&str>> = vec![
        vec!["why", "-c", c, "--port", &port_name, "--vlan", &vlan, "--at", &seq],
        vec!["why", "-c", c, "--port", &port_name, "--vlan", &vlan, "--at", &seq, "--json"],
        vec!["state", "-c", c, "--at", &seq],
        vec!["state", "-c", c, "--at", &seq, "--json"],
        vec!["state", "-c", c, "--at", &seq, "--switch", "tor1"],
        vec!["diff", "-c", c, "--from", "1", "--to", &seq],
        vec!["log", "-c", c, "--kind", "Learnt"],
        vec!["log", "-c", c, "--hypervisor", "xen1", "--json"],
    ];
    let live: Vec<String> = commands.iter().map(|args| ok(args)).collect();
    for (args, out) in commands.iter().zip(&live) {
        assert!(!out.trim().is_empty(), "netfold {args:?} printed nothing");
    }
    assert!(live[0].contains(&format!("VLAN {vlan} is on {port_name} as of record {seq}")), "{}", live[0]);
    let log = ok(&["log", "-c", c]);
    let switch_log = ok(&["log", "-c", c, "--switch", "tor1"]);
    let verify = ok(&["verify", "-c", c]);
    assert!(verify.starts_with("verify OK"), "{verify}");

    // --follow reads the agent too, with the token: the history so far, then waits for more.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_netfold"))
        .args(["log", "-c", c, "--follow", "--kind", "Learnt"])
        .env_remove("NETFOLD_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("netfold log --follow");
    let first = {
        use std::io::BufRead;
        let stdout = follow.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let line = std::io::BufReader::new(stdout).lines().next();
            let _ = tx.send(line);
        });
        rx.recv_timeout(STEP)
    };
    let _ = follow.kill();
    let _ = follow.wait();
    let first = first.expect("a line from log --follow within the bound").expect("a line").unwrap();
    assert_eq!(Some(first.as_str()), live[6].lines().next(), "--follow starts with the history");

    // --agent forces the agent; without the config there is no token, and the agent says so.
    let forced = ok(&["state", "-c", c, "--agent", &base, "--at", &seq]);
    assert_eq!(forced, live[2]);
    let tokenless = netfold(&["state", "--agent", &base, "--at", &seq]);
    assert!(!tokenless.status.success());
    assert!(text(&tokenless.stderr).contains("wants a bearer token"), "{}", text(&tokenless.stderr));

    // status: one screen from the agent, and its JSON.
    let status = ok(&["status", "-c", c]);
    for want in ["Hypervisors:", "xen1", "Xen-Citrix", "live", "Switches:", "tor1", &sim.authority()] {
        assert!(status.contains(want), "`{want}` missing from status:\n{status}");
    }
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", "-c", c, "--json"])).unwrap();
    assert_eq!(status["hypervisors"][0]["session"], "live", "{status}");
    assert!(status["switches"][0]["owned_vlans"].as_u64().unwrap() > 0, "{status}");
    assert!(status["switches"][0]["last_cycle"].as_u64().is_some(), "{status}");

    // Every route's answers conform to docs/openapi.json.
    let doc = openapi();
    let token = "s3cret-of-the-operator";
    let get = reqwest::Method::GET;
    let vlan_q = vlan.as_str();
    /// Method, path, query, the status it must answer.
    type Check<'a> = (reqwest::Method, &'a str, Vec<(&'a str, &'a str)>, u16);
    let checks: Vec<Check> = vec![
        (get.clone(), "/healthz", vec![], 200),
        (get.clone(), "/status", vec![], 200),
        (get.clone(), "/state", vec![], 200),
        (get.clone(), "/state", vec![("at", &seq), ("switch", "tor1")], 200),
        (get.clone(), "/state", vec![("at", "yesterday")], 400),
        (get.clone(), "/why", vec![("port", &port_name), ("vlan", vlan_q)], 200),
        (get.clone(), "/why", vec![("port", "no-colon"), ("vlan", vlan_q)], 400),
        (get.clone(), "/diff", vec![("from", "1"), ("to", &seq)], 200),
        (get.clone(), "/verify", vec![], 200),
        (get.clone(), "/log", vec![("wait", "false")], 200),
        (get.clone(), "/log", vec![("wait", "false"), ("kind", "Learnt"), ("hypervisor", "xen1")], 200),
        (get.clone(), "/switch-log", vec![("wait", "false"), ("switch", "tor1")], 200),
        (reqwest::Method::POST, "/release", vec![("hypervisor", "xen1")], 404),
    ];
    for (method, path, query, want) in checks {
        let (status, body) = conforms(&doc, &base, token, method.clone(), path, &query).await;
        assert_eq!(status, want, "{method} {path}?{query:?}: {body}");
    }
    let (_, metrics) = conforms(&doc, &base, token, get.clone(), "/metrics", &[]).await;
    assert!(metrics.contains("netfold_log_head"), "{metrics}");
    let (status, _) = conforms(&doc, &base, "another-token", get, "/state", &[]).await;
    assert_eq!(status, 401);

    nf.stop().await;

    // The directory is free: the same commands read it and print the same.
    for (args, before) in commands.iter().zip(&live) {
        assert_eq!(&ok(args), before, "netfold {args:?} differs between the running agent and the stopped directory");
    }
    let after = ok(&["log", "-c", c]);
    assert!(after.starts_with(&log), "the agent's log is a prefix of the stopped log:\n{log}\n---\n{after}");
    let after = ok(&["log", "-c", c, "--switch", "tor1"]);
    assert!(after.starts_with(&switch_log), "switch audit:\n{switch_log}\n---\n{after}");
    let after = ok(&["verify", "-c", c]);
    let records = |l: &str| l.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()).unwrap();
    if records(&after) == records(&verify) {
        assert_eq!(verified(&after), verified(&verify));
    } else {
        assert!(records(&after) > records(&verify), "{verify}\n{after}");
    }

    // No agent: status says so, naming where it looked.
    let gone = netfold(&["status", "-c", c]);
    assert!(!gone.status.success());
    let err = text(&gone.stderr);
    assert!(err.contains(&format!("no netfold agent answers at {base}")), "{err}");
}
