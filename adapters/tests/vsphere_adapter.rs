//! The vSphere adapter against the vCenter simulator over real loopback HTTP: re-login after a
//! server-side session drop, connectivity cut (refused or hanging) and restored, the clear errors
//! (wrong password, oversized body, wrong content type), and the simulator's raw SOAP answers.

mod vsphere_support;

use std::time::{Duration, Instant};

use adapters::common::{HttpClient, SecretString, Timeouts, TlsOptions};
use adapters::driver::{Health, LinkState};
use adapters::vsphere::client::Session;
use adapters::vsphere::{codec, Adapter, Error};
use engine::runtime::Link;
use engine::{Fact, Observation};
use sims::vsphere::{Cut, SimOptions, Simulator};
use tokio::sync::mpsc;
use vsphere_support::{config, delta, inventory, next, only_vnic, small, start, steady, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_again_after_the_session_is_dropped_server_side() {
    let mut h = start(small(), |_| {}).await;
    let first = inventory(&mut h.rx).await;
    steady(&h.sim).await;
    h.sim.drop_sessions();
    let again = inventory(&mut h.rx).await;
    assert_eq!(first.len(), again.len(), "a fresh full inventory after re-login, no Disconnected");
    let deadline = Instant::now() + DEADLINE;
    while h.sim.session_count() != 1 {
        assert!(Instant::now() < deadline, "one live session after re-login");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let vm = h.sim.vm_ids()[0].clone();
    steady(&h.sim).await;
    let t = Instant::now();
    h.sim.set_power(&vm, false).unwrap();
    assert!(!only_vnic(&delta(&mut h.rx, t, "after re-login").await.0, "after re-login").powered_on);
    h.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hollow_server_reads_as_an_empty_inventory_follows_as_silence_and_a_healthy_one_reads_whole() {
    let mut h = start(small(), |_| {}).await;
    let first = inventory(&mut h.rx).await;
    assert!(!first.is_empty());
    h.sim.set_fault(sims::fault::Fault::Hollow);
    h.sim.drop_sessions();
    assert!(inventory(&mut h.rx).await.is_empty(), "the filter's first update set has no objects");
    // Following a hollow read reports nothing, not the objects the read did not give.
    let vm = h.sim.vm_ids()[0].clone();
    h.sim.set_power(&vm, false).unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(2), next(&mut h.rx)).await;
    assert!(quiet.is_err(), "nothing follows a hollow read: {quiet:?}");
    h.sim.set_fault(sims::fault::Fault::None);
    h.sim.drop_sessions();
    let again = inventory(&mut h.rx).await;
    assert_eq!(again.len(), first.len(), "a healthy read has every fact again");
    h.task.abort();
}

async fn cut_and_restore(how: Cut) {
    let mut h = start(small(), |_| {}).await;
    inventory(&mut h.rx).await;
    h.sim.cut(how).await;
    let vm = h.sim.vm_ids()[0].clone();
    h.sim.set_power(&vm, false).unwrap();
    match next(&mut h.rx).await {
        Observation::Disconnected { reason, silent_ms } => {
            eprintln!("{how:?}: disconnected after {silent_ms} ms of silence: {reason}")
        }
        other => panic!("{how:?}: expected Disconnected, got {other:?}"),
    }
    h.sim.restore().await.unwrap();
    let facts = inventory(&mut h.rx).await;
    let v = facts
        .iter()
        .find_map(|f| match f {
            Fact::Vnic(v) if v.vm == vm => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert!(!v.powered_on, "the change made during the outage is in the fresh inventory");
    steady(&h.sim).await;
    let t = Instant::now();
    h.sim.set_power(&vm, true).unwrap();
    assert!(only_vnic(&delta(&mut h.rx, t, "after restore").await.0, "after restore").powered_on);
    h.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_give_disconnected_then_a_fresh_inventory() {
    cut_and_restore(Cut::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_gives_disconnected_then_a_fresh_inventory() {
    cut_and_restore(Cut::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_retries_slowly_shows_in_health_and_recovers_once_fixed() {
    let sim = Simulator::start(small()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (_asks, asks_rx) = mpsc::channel(1);
    let mut c = config(&sim, &dir, "not-the-password");
    c.fatal_retry_secs = 1;
    let health = Health::new(&c.url);
    let adapter = Adapter::new(c).unwrap();
    let link = Link { observations: tx, asks: asks_rx };
    let task = tokio::spawn(adapter.run(link, Duration::from_secs(180), health.clone()));
    let Observation::Disconnected { reason, .. } = next(&mut rx).await else { panic!("a failed attempt first") };
    assert!(reason.contains("incorrect user name or password") && reason.contains(sim.user()), "{reason}");
    assert!(!reason.contains("not-the-password"), "the password is never in the error");
    let h = health.get();
    assert_eq!(h.state, LinkState::Failing);
    assert!(h.last_error.as_deref().is_some_and(|e| e.contains("incorrect user name")), "{h:?}");
    // It keeps trying on the slow schedule: the password fixed on vCenter's side is picked up.
    sim.set_password("not-the-password");
    loop {
        match next(&mut rx).await {
            Observation::Disconnected { .. } => continue,
            Observation::Inventory { facts, .. } => {
                assert!(!facts.is_empty());
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(health.get().state, LinkState::Live);
    assert_eq!(health.get().last_error, None);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_larger_than_the_cap_is_read_object_by_object_and_an_oversized_remainder_is_retried() {
    let opts = SimOptions { hosts: 10, vms_per_host: 10, ..SimOptions::default() };
    let mut h = start(opts, |c| {
        c.max_body_bytes = 16 * 1024;
        c.page_size = 500;
        c.fatal_retry_secs = 1;
    })
    .await;
    // One page of 100 VMs is far past 16 KiB, but each object is below it: all are learnt.
    let Observation::Inventory { facts, .. } = next(&mut h.rx).await else { panic!("the inventory is read") };
    let vnics = facts.iter().filter(|f| matches!(f, Fact::Vnic(_))).count();
    assert_eq!(vnics, h.sim.vm_ids().len(), "every VM's NIC");
    // A reply whose remainder (2 MiB of padding after the envelope) passes the cap is refused.
    h.sim.set_fault(sims::fault::Fault::Oversize);
    h.sim.drop_sessions();
    for attempt in 1..=3 {
        let reason = loop {
            match next(&mut h.rx).await {
                Observation::Disconnected { reason, .. } => break reason,
                Observation::Delta { .. } => continue,
                other => panic!("attempt {attempt} fails: {other:?}"),
            }
        };
        if reason.contains("exceeds the 16384-byte limit") {
            continue;
        }
        assert!(attempt == 1, "attempt {attempt}: {reason}");
    }
    assert!(!h.task.is_finished(), "the adapter never stops");
    assert_eq!(h.health.get().state, LinkState::Failing);
    assert!(h.health.get().logouts >= 2, "every abandoned session is logged out: {:?}", h.health.get());
    h.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_xml_response_is_a_clear_error() {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/sdk",
        axum::routing::post(|| async {
            ([(CONTENT_TYPE, "text/html")], "<html><body>Service Unavailable</body></html>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sdk", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = HttpClient::new(&TlsOptions::default(), &Timeouts::flat(Duration::from_secs(5)), 1 << 20).unwrap();
    let e = Session::login(&http, &url, "u", &SecretString::from("p")).await.unwrap_err();
    assert!(matches!(&e, Error::ContentType { content_type, .. } if content_type == "text/html"), "{e:?}");
    assert!(e.to_string().contains("expected text/xml"), "{e}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_raw_soap_like_vcenter() {
    let sim = Simulator::start(small()).await.unwrap();
    let http = reqwest::Client::new();
    let post = |body: String, cookie: Option<String>| {
        let mut r = http
            .post(sim.url())
            .header("Content-Type", "text/xml; charset=\"utf-8\"")
            .header("SOAPAction", "\"urn:vim25/8.0.2.0\"")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        r.send()
    };
    let pc = codec::MoRef::new("PropertyCollector", "propertyCollector");
    let r = post(codec::retrieve_properties_ex(&pc, "", 10), None).await.unwrap();
    assert_eq!(r.status(), 500);
    let body = r.bytes().await.unwrap();
    assert!(matches!(codec::decode_retrieve(&body, "RetrievePropertiesEx"), Err(Error::NotAuthenticated { .. })));

    let sm = codec::MoRef::new("SessionManager", "SessionManager");
    let r = post(codec::login(&sm, sim.user(), "wrong"), None).await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(matches!(codec::decode_login(&r.bytes().await.unwrap(), "u", "x"), Err(Error::InvalidLogin { .. })));

    let r = post(codec::login(&sm, sim.user(), &sim.password()), None).await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("vmware_soap_session=\""));
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("<LoginResponse xmlns=\"urn:vim25\"><returnval>"), "{text}");

    let vm = codec::MoRef::new("ViewManager", "ViewManager");
    let root = codec::MoRef::new("Folder", "group-d1");
    let r = post(codec::create_container_view(&vm, &root, &["HostSystem"]), Some(cookie.clone())).await.unwrap();
    let view = codec::decode_moref(&r.bytes().await.unwrap(), "CreateContainerView").unwrap();
    let spec = codec::filter_spec(&view, &[("HostSystem", &["name"][..])]);
    let r = post(codec::retrieve_properties_ex(&pc, &spec, 2), Some(cookie.clone())).await.unwrap();
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("<propSet><name>name</name><val xsi:type=\"xsd:string\">esx-01.sim.local</val></propSet>"),
        "{text}"
    );
    let page = codec::decode_retrieve(text.as_bytes(), "RetrievePropertiesEx").unwrap();
    assert_eq!(page.objects.len(), 2);
    let token = page.token.expect("3 hosts in pages of 2");
    let r = post(codec::continue_retrieve_properties_ex(&pc, &token), Some(cookie.clone())).await.unwrap();
    let last = codec::decode_retrieve(&r.bytes().await.unwrap(), "ContinueRetrievePropertiesEx").unwrap();
    assert_eq!((last.objects.len(), last.token), (1, None));

    let r = post(codec::create_filter(&pc, &spec), Some(cookie.clone())).await.unwrap();
    codec::decode_moref(&r.bytes().await.unwrap(), "CreateFilter").unwrap();
    let r = post(codec::wait_for_updates_ex(&pc, "", 1, 2), Some(cookie.clone())).await.unwrap();
    let u = codec::decode_updates(&r.bytes().await.unwrap()).unwrap().unwrap();
    assert!(u.truncated, "3 enters with maxObjectUpdates 2");
    let r = post(codec::wait_for_updates_ex(&pc, &u.version, 1, 2), Some(cookie.clone())).await.unwrap();
    let u = codec::decode_updates(&r.bytes().await.unwrap()).unwrap().unwrap();
    assert_eq!((u.objects.len(), u.truncated), (1, false));
    let r = post(codec::wait_for_updates_ex(&pc, &u.version, 1, 2), Some(cookie)).await.unwrap();
    assert_eq!(
        codec::decode_updates(&r.bytes().await.unwrap()).unwrap(),
        None,
        "nothing changed within maxWaitSeconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_stops_the_adapter_and_logs_out() {
    let mut h = start(small(), |_| {}).await;
    inventory(&mut h.rx).await;
    steady(&h.sim).await;
    assert_eq!(h.sim.session_count(), 1);
    drop(h.rx);
    let vm = h.sim.vm_ids()[0].clone();
    h.sim.set_power(&vm, false).unwrap();
    tokio::time::timeout(DEADLINE, h.task).await.expect("stops").expect("joins");
    assert_eq!(h.sim.session_count(), 0, "logged out");
}

fn tls_options() -> SimOptions {
    SimOptions { tls: true, ..small() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_verified_by_default() {
    let sim = Simulator::start(tls_options()).await.unwrap();
    assert!(sim.url().starts_with("https://"));
    let http = HttpClient::new(&TlsOptions::default(), &Timeouts::flat(Duration::from_secs(5)), 1 << 20).unwrap();
    let e = Session::login(&http, &sim.url(), sim.user(), &SecretString::from(sim.password())).await.unwrap_err();
    let chain = e.chain();
    assert!(chain.contains("certificate"), "the cause names the certificate: {chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_makes_the_simulator_trusted() {
    let sim = Simulator::start(tls_options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem().unwrap()).unwrap();
    let mut c = config(&sim, &dir, &sim.password());
    c.tls.ca_file = Some(ca);
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(Adapter::new(c).unwrap().run_into(tx));
    match next(&mut rx).await {
        Observation::Inventory { endpoint, facts, .. } => {
            assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
            assert!(!facts.is_empty());
        }
        other => panic!("expected Inventory, got {other:?}"),
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_accepts_the_self_signed_certificate() {
    let sim = Simulator::start(tls_options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&sim, &dir, &sim.password());
    c.tls.insecure = true;
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(Adapter::new(c).unwrap().run_into(tx));
    assert!(matches!(next(&mut rx).await, Observation::Inventory { .. }));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_rotated_while_live_reports_disconnected_and_keeps_retrying() {
    let mut h = start(small(), |c| c.fatal_retry_secs = 1).await;
    inventory(&mut h.rx).await;
    steady(&h.sim).await;
    h.sim.set_password("rotated");
    h.sim.drop_sessions();
    for _ in 0..2 {
        match next(&mut h.rx).await {
            Observation::Disconnected { reason, .. } => {
                assert!(reason.contains("incorrect user name or password"), "{reason}")
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    assert!(!h.task.is_finished());
    assert_eq!(h.health.get().state, LinkState::Failing);
    h.task.abort();
}
