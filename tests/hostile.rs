//! Hostile peers and careless operators (issue 11), against the real `netfold` binary.
//!
//! - Fake XenAPI peers started by the test, each recording every request it receives: a pool
//!   member over pinned TLS that answers `HOST_IS_SLAVE` naming a cleartext host, another
//!   naming an HTTPS host the pool never listed, one answering a record with a struct member
//!   given twice, one streaming a 500 MB reply. netfold must follow none of them: the password
//!   never reaches the hosts outside the configured trust, nothing is appended to the log, the
//!   switch keeps every VLAN, and the agent's peak RSS stays far below the reply's size.
//! - The config table: every bad config of the issue gives the same error from `config check`
//!   and from `run`.
//! - The HTTP endpoint: half-sent requests are timed out, connections are capped, and with
//!   `[http] token_file` every route but `/healthz` needs the bearer token.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use hyper_util::rt::TokioIo;
use sims::xen::xmlrpc::{decode_call, encode_response, Response, Value};
use support::netfold::{finish, free_port, text};

const PASSWORD: &str = "root-password-under-attack";

// ---------------------------------------------------------------------------------------------
// Running the binary

fn netfold() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netfold"));
    c.env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// SIGTERM, then the output.
fn stop(child: Child) -> Output {
    let pid = child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill").success();
    assert!(ok, "kill -TERM {pid}");
    finish(child, "after SIGTERM")
}

/// The one `netfold: ` paragraph of a failed run.
fn failure(out: &Output) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected a failure; stdout: {} stderr: {err}", text(&out.stdout));
    assert!(!err.contains("panicked"), "a panic, not an error: {err}");
    err.lines().find(|l| l.starts_with("netfold: ")).unwrap_or_else(|| panic!("no error paragraph: {err}")).to_string()
}

fn write_private(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `kB` of a `/proc/PID/status` field.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: netfold\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Fake XenAPI peers

/// Every request a fake received: `method` and the raw body.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone)]
struct Fake {
    seen: Seen,
    answer: Arc<dyn Fn(&str) -> Body + Send + Sync>,
}

async fn xapi(State(f): State<Fake>, body: String) -> axum::response::Response {
    let method = decode_call(body.as_bytes()).map(|c| c.method).unwrap_or_else(|e| format!("undecodable: {e}"));
    f.seen.lock().unwrap().push((method.clone(), body));
    axum::response::Response::builder()
        .header("content-type", "text/xml")
        .body((f.answer)(&method))
        .expect("a response")
}

fn reply(r: &Response) -> Body {
    Body::from(encode_response(r))
}

fn failure_reply(desc: &[&str]) -> Body {
    reply(&Response::Failure(desc.iter().map(|s| s.to_string()).collect()))
}

fn success(v: Value) -> Body {
    reply(&Response::Success(v))
}

/// A self-signed certificate for 127.0.0.1 (PEM) and an acceptor serving it.
fn tls() -> (String, tokio_rustls::TlsAcceptor) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ck.cert.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Starts a fake on 127.0.0.1 (over TLS with `acceptor`); returns its address and its record.
async fn start_fake(
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    answer: impl Fn(&str) -> Body + Send + Sync + 'static,
) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new().fallback(post(xapi)).with_state(Fake { seen: seen.clone(), answer: Arc::new(answer) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (app, acceptor) = (app.clone(), acceptor.clone());
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match acceptor {
                    Some(a) => match a.accept(stream).await {
                        Ok(s) => http.serve_connection(TokioIo::new(s), svc).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), svc).await,
                };
            });
        }
    });
    (addr, seen)
}

/// A peer that would accept any login and serve an empty pool: what an attacker runs.
fn accepting(method: &str) -> Body {
    match method {
        "session.login_with_password" => success(Value::str("OpaqueRef:stolen")),
        "pool.get_all" => success(Value::Array(vec![])),
        m if m.ends_with("get_all_records") => success(Value::Struct(Default::default())),
        _ => failure_reply(&["MESSAGE_METHOD_UNKNOWN", method]),
    }
}

/// A pool whose `host` record carries the member `tag`... twice (a `VLAN`-like struct).
fn duplicate_member(method: &str) -> Body {
    match method {
        "session.login_with_password" => success(Value::str("OpaqueRef:s")),
        "pool.get_all" => success(Value::Array(vec![])),
        "VLAN.get_all_records" => Body::from(
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>\
             <member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct>\
             <member><name>OpaqueRef:v</name><value><struct>\
             <member><name>tag</name><value>100</value></member>\
             <member><name>tag</name><value>200</value></member>\
             </struct></value></member></struct></value></member></struct></value></param></params></methodResponse>",
        ),
        m if m.ends_with("get_all_records") => success(Value::Struct(Default::default())),
        _ => failure_reply(&["MESSAGE_METHOD_UNKNOWN", method]),
    }
}

/// Streams a 500 MB `pool.get_all` reply, 64 KiB at a time (the fake holds none of it).
fn huge(method: &str) -> Body {
    match method {
        "session.login_with_password" => success(Value::str("OpaqueRef:s")),
        _ => {
            let chunk = bytes_of(64 * 1024);
            let head = futures::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
                    b"<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>",
                ))
            });
            let body = futures::stream::iter((0..8_000).map(move |_| Ok(chunk.clone())));
            Body::from_stream(futures::StreamExt::chain(head, body))
        }
    }
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'x'; n])
}

fn events(data: &Path) -> Vec<serde_json::Value> {
    let out = netfold().args(["log", "--json", "--data-dir", data.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "netfold log: {}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn hostile_xenapi_peers_get_no_password_no_event_and_no_switch_change() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pem, acceptor) = tls();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let pw = dir.path().join("xen.pw");
    write_private(&pw, PASSWORD, 0o600);

    let (
        _plain_evil,
        plain_seen,
        tls_evil,
        tls_seen,
        slave_a,
        seen_a,
        slave_b,
        seen_b,
        dup,
        dup_seen,
        big,
        big_seen,
        sw,
    ) = rt.block_on(async {
        let (plain_evil, plain_seen) = start_fake(None, accepting).await;
        let (tls_evil, tls_seen) = start_fake(Some(acceptor.clone()), accepting).await;
        let to_plain = format!("http://{plain_evil}");
        let (slave_a, seen_a) =
            start_fake(Some(acceptor.clone()), move |_| failure_reply(&["HOST_IS_SLAVE", &to_plain])).await;
        let to_tls = tls_evil.to_string();
        let (slave_b, seen_b) =
            start_fake(Some(acceptor.clone()), move |_| failure_reply(&["HOST_IS_SLAVE", &to_tls])).await;
        let (dup, dup_seen) = start_fake(Some(acceptor.clone()), duplicate_member).await;
        let (big, big_seen) = start_fake(Some(acceptor.clone()), huge).await;
        let sim = sims::eapi::Sim::new("admin", "switch-pw").with_trunk("Ethernet1", &[1, 100, 200]);
        let handle = sim.clone();
        let (sw, _) = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        (
            plain_evil,
            plain_seen,
            tls_evil,
            tls_seen,
            slave_a,
            seen_a,
            slave_b,
            seen_b,
            dup,
            dup_seen,
            big,
            big_seen,
            (sw, handle),
        )
    });
    let sw_pw = dir.path().join("sw.pw");
    write_private(&sw_pw, "switch-pw", 0o600);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let data = dir.path().join("data");
    let hv = |name: &str, addr: SocketAddr, extra: &str| {
        format!(
            "[[hypervisor]]\nname = \"{name}\"\nkind = \"xen\"\nurl = \"https://{addr}\"\nuser = \"root\"\n\
             password = {{ password_file = \"{}\" }}\ntls = {{ ca_file = \"{}\" }}\n{extra}\n",
            pw.display(),
            ca.display()
        )
    };
    let config = format!(
        "data_dir = \"{}\"\n[http]\nlisten = \"{http}\"\n\n{}{}{}{}\
         [[switch]]\nname = \"tor1\"\nkind = \"eapi\"\naddress = \"http://{}\"\nallow_plaintext = true\nuser = \"admin\"\n\
         password = {{ password_file = \"{}\" }}\n",
        data.display(),
        hv("xen-scheme", slave_a, "fatal_retry_secs = 1"),
        hv("xen-outside", slave_b, "fatal_retry_secs = 1"),
        hv("xen-dup", dup, ""),
        hv("xen-huge", big, "max_body_bytes = 16777216\nfatal_retry_secs = 1"),
        sw.0,
        sw_pw.display(),
    );
    let path = dir.path().join("netfold.toml");
    std::fs::write(&path, config).unwrap();

    let child = netfold().args(["run", "--config", path.to_str().unwrap()]).spawn().unwrap();
    let pid = child.id();
    // Every fake is tried, and retried (backoff from 500 ms; a refused redirect and a reply over
    // the cap are fatal errors, retried every `fatal_retry_secs`).
    wait_until("every fake asked twice", Duration::from_secs(30), || {
        [&seen_a, &seen_b, &dup_seen].iter().all(|s| s.lock().unwrap().len() >= 2)
            && !big_seen.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let hwm_kb = proc_kb(pid, "VmHWM:");
    let out = stop(child);
    let err = text(&out.stderr);

    // The password reached only the configured hosts; the hosts named by the redirects never
    // saw a single request.
    assert!(
        plain_seen.lock().unwrap().is_empty(),
        "the cleartext host was contacted: {:?}",
        plain_seen.lock().unwrap()
    );
    assert!(tls_seen.lock().unwrap().is_empty(), "the unlisted host was contacted: {:?}", tls_seen.lock().unwrap());
    for seen in [&seen_a, &seen_b] {
        assert!(seen.lock().unwrap().iter().all(|(m, _)| m == "session.login_with_password"));
    }
    assert!(err.contains("XenAPI redirect refused"), "{err}");
    assert!(err.contains("while the pool is reached over `https`: a redirect never changes the scheme"), "{err}");
    assert!(
        err.contains(&format!("names master `{tls_evil}`, which is neither the configured host nor the address")),
        "{err}"
    );
    // The duplicate member and the oversized reply are named.
    assert!(
        err.contains("struct member `tag` appears twice in one struct (first string `100`, then string `200`"),
        "{err}"
    );
    assert!(err.contains("exceeds the 16777216-byte limit"), "{err}");
    assert!(!err.contains(PASSWORD), "the password was logged");
    // 500 MB were offered; the agent read at most 16 MiB of it.
    assert!(hwm_kb > 0 && hwm_kb < 200 * 1024, "peak RSS {hwm_kb} kB");
    // Nothing learnt from any of them; the switch kept every VLAN.
    let log = events(&data);
    assert!(log.iter().all(|e| e["kind"] != "Learnt"), "{log:?}");
    assert_eq!(sw.1.trunk("Ethernet1"), Some(vec![1, 100, 200]));
    eprintln!("peak RSS of the agent: {hwm_kb} kB; events: {}", log.len());
}

// ---------------------------------------------------------------------------------------------
// The config table

/// Turns the base config (and the files beside it) into a bad one.
type Edit = Box<dyn Fn(&str, &Path) -> String>;

struct Case {
    what: &'static str,
    edit: Edit,
    error: &'static str,
}

fn replace(from: &'static str, to: &'static str) -> Edit {
    Box::new(move |c: &str, _: &Path| {
        assert!(c.contains(from), "the base config has `{from}`");
        c.replacen(from, to, 1)
    })
}

fn base_config(dir: &Path) -> String {
    let pw = dir.join("xen.pw");
    write_private(&pw, "pw", 0o600);
    format!(
        "data_dir = \"{}\"\n\n[[hypervisor]]\nname = \"xen217\"\nkind = \"xen\"\nurl = \"https://xen217.example\"\n\
         user = \"root\"\npassword = {{ password_file = \"{}\" }}\n\n\
         [[switch]]\nname = \"tor1\"\nkind = \"ovs\"\naddress = \"tcp:127.0.0.1:1\"\n\n\
         [[topology]]\nhypervisor = \"xen217\"\nhost = \"h\"\nnic = \"eth0\"\nport = \"tor1:eth5\"\n",
        dir.join("data").display(),
        pw.display()
    )
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "an IPv6 literal left open",
            edit: replace("https://xen217.example", "https://[::1/sdk"),
            error: "key `url`: `https://[::1/sdk` is not a URL: invalid IPv6 address",
        },
        Case {
            what: "port 99999",
            edit: replace("https://xen217.example", "https://xen217.example:99999"),
            error: "key `url`: `https://xen217.example:99999` is not a URL: invalid port number",
        },
        Case {
            what: "an empty password_file",
            edit: Box::new(|c, _| {
                let start = c.find("password = {").unwrap();
                let end = start + c[start..].find('\n').unwrap();
                format!("{}password = {{ password_file = \"\" }}{}", &c[..start], &c[end..])
            }),
            error: "`xen217`: key `password`: password_file is empty",
        },
        Case {
            what: "an ssl: OVS address",
            edit: replace("tcp:127.0.0.1:1", "ssl:127.0.0.1:6640"),
            error: "`tor1`: key `address`: ",
        },
        Case {
            what: "parking_vlan 5000",
            edit: replace("address = \"tcp:127.0.0.1:1\"", "address = \"tcp:127.0.0.1:1\"\nparking_vlan = 5000"),
            error: "`tor1`: key `parking_vlan`: VLAN 5000 is out of range",
        },
        Case {
            what: "an ftp:// eAPI URL",
            edit: replace(
                "kind = \"ovs\"\naddress = \"tcp:127.0.0.1:1\"",
                "kind = \"eapi\"\naddress = \"ftp://tor1.example\"\nuser = \"admin\"\npassword = { password_env = \"SW_PW\" }",
            ),
            error: "`tor1`: key `address`: `ftp://tor1.example/` has scheme `ftp`",
        },
        Case {
            what: "a cleartext eAPI URL without the opt-in",
            edit: replace(
                "kind = \"ovs\"\naddress = \"tcp:127.0.0.1:1\"",
                "kind = \"eapi\"\naddress = \"http://tor1.example\"\nuser = \"admin\"\npassword = { password_env = \"SW_PW\" }",
            ),
            error: "`tor1`: key `address`: `http://tor1.example/` is cleartext http://",
        },
        Case {
            what: "topology naming an unknown hypervisor",
            edit: replace("hypervisor = \"xen217\"", "hypervisor = \"xen999\""),
            error: "[[topology]] #1: key `hypervisor`: `xen999` is not a configured [[hypervisor]]",
        },
        Case {
            what: "topology naming an unknown switch",
            edit: replace("port = \"tor1:eth5\"", "port = \"tor9:eth5\""),
            error: "[[topology]] #1: key `port`: switch `tor9` is not a configured [[switch]]",
        },
        Case {
            what: "a world-readable password file",
            edit: Box::new(|c, dir| {
                std::fs::set_permissions(dir.join("xen.pw"), std::fs::Permissions::from_mode(0o644)).unwrap();
                c.to_string()
            }),
            error: "has mode 644: its group or others can read it; `chmod 600` it",
        },
        Case {
            what: "a ca_file that is not PEM",
            edit: Box::new(|c, dir| {
                let ca = dir.join("ca.pem");
                std::fs::write(&ca, "not a certificate\n").unwrap();
                c.replacen("user = \"root\"", &format!("user = \"root\"\ntls = {{ ca_file = \"{}\" }}", ca.display()), 1)
            }),
            error: "holds no usable PEM certificate",
        },
        Case {
            what: "cleartext without the opt-in",
            edit: replace("https://xen217.example", "http://xen217.example"),
            error: "`http://xen217.example/` is cleartext http://",
        },
        Case {
            what: "credentials in the URL",
            edit: replace("https://xen217.example", "http://root:hunter2@xen217.example"),
            error: "`http://***@xen217.example/` holds a user name or password",
        },
    ]
}

#[test]
fn every_bad_config_gives_the_same_error_from_check_and_run() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let config = (case.edit)(&base_config(dir.path()), dir.path());
        let path = dir.path().join("netfold.toml");
        std::fs::write(&path, &config).unwrap();
        let p = path.to_str().unwrap();
        let check = finish(netfold().args(["config", "check", "--config", p]).spawn().unwrap(), "config check");
        let run = finish(netfold().args(["run", "--config", p]).spawn().unwrap(), "run");
        let (c, r) = (failure(&check), failure(&run));
        assert_eq!(c, r, "{}: check and run disagree", case.what);
        assert!(c.contains(case.error), "{}: `{}` not in: {c}", case.what, case.error);
        let all = format!("{}{}{}{}", text(&check.stdout), text(&check.stderr), text(&run.stdout), text(&run.stderr));
        assert!(!all.contains("hunter2"), "{}: a secret was printed: {all}", case.what);
        assert!(!dir.path().join("data").exists(), "{}: run touched the data directory before refusing", case.what);
    }
}

#[test]
fn what_the_operator_opted_into_passes_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path())
        .replacen("https://xen217.example", "http://[::1]:8080", 1)
        .replacen("user = \"root\"", "user = \"root\"\nallow_plaintext = true", 1)
        .replacen("data_dir", "allow_readable_secrets = true\ndata_dir", 1);
    std::fs::set_permissions(dir.path().join("xen.pw"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let path = dir.path().join("netfold.toml");
    std::fs::write(&path, &config).unwrap();
    let out = finish(netfold().args(["config", "check", "--config", path.to_str().unwrap()]).spawn().unwrap(), "check");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("warning: [[hypervisor]] `xen217`: key `url`: `http://[::1]:8080/` is cleartext"),
        "{stdout}"
    );
    assert!(
        stdout.contains("has mode 640: its group or others can read it (allow_readable_secrets = true)"),
        "{stdout}"
    );
    assert!(stdout.contains(": OK"), "{stdout}");

    // An IPv6 literal with a path is a URL like any other.
    let v6 = base_config(dir.path()).replacen("https://xen217.example", "https://[::1]/sdk", 1);
    std::fs::write(&path, &v6).unwrap();
    let out = finish(netfold().args(["config", "check", "--config", path.to_str().unwrap()]).spawn().unwrap(), "check");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// The HTTP endpoint

#[test]
fn the_endpoint_times_out_half_sent_requests_caps_connections_and_checks_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_private(&token, "t0ken-of-the-operator\n", 0o600);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "data_dir = \"{}\"\n[http]\nlisten = \"{http}\"\ntoken_file = \"{}\"\nmax_connections = 8\n\n\
         [[switch]]\nname = \"mem\"\nkind = \"memory\"\n",
        dir.path().join("data").display(),
        token.display()
    );
    let path = dir.path().join("netfold.toml");
    std::fs::write(&path, config).unwrap();
    let child = netfold().args(["run", "--config", path.to_str().unwrap()]).spawn().unwrap();
    let pid = child.id();
    wait_until("the endpoint answers", Duration::from_secs(30), || http_get(http, "/healthz", None) == Some(200));

    // The token guards everything but /healthz.
    assert_eq!(http_get(http, "/state", None), Some(401));
    assert_eq!(http_get(http, "/state", Some("t0ken-of-the-operatoR")), Some(401));
    assert_eq!(http_get(http, "/state", Some("t0ken-of-the-operator")), Some(200));
    assert_eq!(http_get(http, "/metrics", None), Some(401));

    // A connection that never sends a byte, and one that sends half a request, are closed by
    // the agent, not held forever.
    let mut idle = TcpStream::connect(http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut half = TcpStream::connect(http).unwrap();
    half.write_all(b"GET /state HTTP/1.1\r\nHost: netfold\r\n").unwrap();
    half.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = half.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(40), "a half-sent request held {took:?}");
    assert!(n == 0 || text(&buf[..n]).starts_with("HTTP/1.1 408"), "{}", text(&buf[..n]));
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)), "the idle connection is closed");
    assert!(started.elapsed() < Duration::from_secs(40), "an idle connection held {:?}", started.elapsed());

    // 100 stalled connections (within the kernel's accept backlog of 128, so none waits on a
    // SYN retry): the agent holds at most 8 of them open, the rest wait in the backlog.
    let baseline = open_fds(pid);
    let stalled: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(http).unwrap();
            s.write_all(b"GET /state HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = open_fds(pid);
    assert!(during <= baseline + 8 + 2, "{during} fds open during the flood (baseline {baseline})");
    drop(stalled);
    // Once the attacker goes, the endpoint answers again.
    wait_until("healthz after the flood", Duration::from_secs(30), || http_get(http, "/healthz", None) == Some(200));
    let out = stop(child);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!(
        "fds: baseline {baseline}, during a 100-connection flood {during}; half-sent request closed after {took:?}"
    );
}
