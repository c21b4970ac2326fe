//! Where the audit commands and `status` get their answers: the history itself (a sled data
//! directory, or the config's PostgreSQL database in read-only sessions), or the running
//! agent's HTTP API ([`crate::http`]). sled lets one process open a database, so while
//! the agent runs the directory is its alone: a command that finds it in use (or is given
//! `--agent URL`) asks the agent, which computes the answer with the same `replay` functions
//! over its live log and returns data; the command renders it with the same code either way
//! ([`crate::audit`]).
//!
//! The agent's address is `--agent`, else the config's `[http] listen`; the config's `[http]
//! token_file`, when set, is sent as `Authorization: Bearer`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters::common::{ExposeSecret as _, SecretString};
use anyhow::{Context, Result};
use replay::History;
use serde::de::DeserializeOwned;

use crate::cli::{AgentArgs, DataDir};

/// The listen address the agent uses when the config does not say (`[http] listen`).
const DEFAULT_AGENT: &str = "http://127.0.0.1:9187";

/// Where the config is looked for when `-c` is not given: the working directory's (as `run`
/// defaults to), then the one the Debian package installs.
const DEFAULT_CONFIGS: &[&str] = &["netfold.toml", "/etc/netfold/netfold.toml"];

/// The config file the command reads: the one given, else the first of [`DEFAULT_CONFIGS`]
/// that exists.
fn config(args: &AgentArgs) -> Result<Option<crate::config::Plan>> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None => match DEFAULT_CONFIGS.iter().map(Path::new).find(|p| p.is_file()) {
            Some(p) => p.to_path_buf(),
            None => return Ok(None),
        },
    };
    // Parsed and validated only: the passwords it names are the agent's, not read here.
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read the config {}", path.display()))?;
    crate::config::parse(&text, &path).map(Some)
}

/// An HTTP client of the running agent.
pub struct Agent {
    base: String,
    /// Why the agent is asked, when it was not named (for the message when none answers).
    why: Option<String>,
    token: Option<SecretString>,
    http: reqwest::Client,
}

/// Where one command reads.
pub enum Source {
    /// The history itself, read directly.
    Local(Local),
    /// The running agent's HTTP API.
    Agent(Agent),
}

/// A history read directly, never written.
pub enum Local {
    /// A sled data directory no agent holds (a private read-only copy: [`History::open`]).
    Dir(PathBuf),
    /// The config's PostgreSQL database (`[store] kind = "postgres"`), read in read-only
    /// sessions: any number of readers, instances running or not.
    Postgres(Box<crate::config::PostgresPlan>),
}

impl Local {
    pub async fn open(&self) -> Result<History> {
        match self {
            Local::Dir(dir) => {
                History::open(dir).with_context(|| format!("cannot read the history in {}", dir.display()))
            }
            Local::Postgres(pg) => {
                let store = store::PgStore::connect_read_only(pg.config.clone(), pg.tls.clone())
                    .await
                    .with_context(|| format!("cannot read the history in PostgreSQL {}", pg.url))?;
                History::open_postgres(store)
                    .await
                    .with_context(|| format!("cannot read the history in PostgreSQL {}", pg.url))
            }
        }
    }

    /// Where it is, for messages.
    pub fn place(&self) -> String {
        match self {
            Local::Dir(dir) => dir.display().to_string(),
            Local::Postgres(pg) => format!("PostgreSQL {}", pg.url),
        }
    }
}

impl Agent {
    /// The agent `args` and the config name (`--agent`, else `[http] listen`), with the token.
    pub fn from_args(args: &AgentArgs) -> Result<Agent> {
        Self::with_config(args, config(args)?.as_ref())
    }

    fn with_config(args: &AgentArgs, plan: Option<&crate::config::Plan>) -> Result<Agent> {
        let base = match (&args.agent, plan) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(plan)) => {
                // An unspecified address is reached on loopback.
                let mut addr = plan.http.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                format!("http://{addr}")
            }
            (None, None) => DEFAULT_AGENT.to_string(),
        };
        let token = match plan {
            Some(plan) => crate::config::http_token(&plan.http)?,
            None => None,
        };
        // No overall timeout: `verify` of a long log takes as long as it takes; connecting does not.
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Agent { base, why: None, token, http })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose_secret().trim());
        }
        req
    }

    /// `GET path?query`, the body as text; a non-2xx answer is an error with the agent's reason.
    pub async fn get_text(&self, path: &str, query: &[(&str, String)], timeout: Option<Duration>) -> Result<String> {
        self.get_raw(path, query, timeout).await.map(|(body, _)| body)
    }

    /// `GET path?query`: the body and the headers (the paging ones of `/log`, `/switch-log`).
    pub async fn get_page(&self, path: &str, query: &[(&str, String)]) -> Result<(String, reqwest::header::HeaderMap)> {
        self.get_raw(path, query, None).await
    }

    async fn get_raw(
        &self,
        path: &str,
        query: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<(String, reqwest::header::HeaderMap)> {
        let mut req = self.request(reqwest::Method::GET, path, query);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.with_context(|| self.unreachable())?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.text().await.with_context(|| format!("reading the agent's answer to {path}"))?;
        if status.is_success() {
            return Ok((body, headers));
        }
        Err(self.refusal(path, status, &body))
    }

    /// `GET path?query` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let body = self.get_text(path, query, None).await?;
        serde_json::from_str(&body)
            .with_context(|| format!("the agent at {} sent a malformed {path} answer", self.base))
    }

    /// `POST path?query`: the status and the JSON body.
    pub async fn post(&self, path: &str, query: &[(&str, String)]) -> Result<serde_json::Value> {
        let resp = self
            .request(reqwest::Method::POST, path, query)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("reading the agent's answer to {path}"))?;
        if !status.is_success() {
            return Err(self.refusal(path, status, &body));
        }
        serde_json::from_str(&body).with_context(|| format!("the agent's answer to {path} is not JSON"))
    }

    fn unreachable(&self) -> String {
        format!(
            "{}no netfold agent answers at {} (give its address with --agent URL, or the config whose [http] listen it uses with -c)",
            self.why.as_deref().map(|w| format!("{w}, but ")).unwrap_or_default(),
            self.base
        )
    }

    fn refusal(&self, path: &str, status: reqwest::StatusCode, body: &str) -> anyhow::Error {
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return anyhow::anyhow!(
                "the agent at {} wants a bearer token for {path}: give the config whose [http] token_file it uses (-c)",
                self.base
            );
        }
        let why = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        anyhow::anyhow!("the agent at {} answered {path} with {status}: {why}", self.base)
    }
}

impl Source {
    /// `--agent` forces the agent; `--data-dir` names a sled data directory. Otherwise a config
    /// on PostgreSQL is read there; on sled, the data directory (the config's, or
    /// ./netfold-data) is read directly unless a running agent holds it, then the agent is
    /// asked.
    pub fn resolve(args: &DataDir) -> Result<Source> {
        let plan = config(&args.agent)?;
        if args.agent.agent.is_some() {
            return Agent::with_config(&args.agent, plan.as_ref()).map(Source::Agent);
        }
        if let (None, Some(p)) = (&args.data_dir, &plan) {
            if matches!(p.store, crate::config::StorePlan::Postgres(_)) {
                let plan = plan.expect("matched");
                let (pg, warnings) = crate::config::reader_store(plan)?.expect("a PostgreSQL store");
                for w in warnings {
                    tracing::warn!("{w}");
                }
                return Ok(Source::Local(Local::Postgres(Box::new(pg))));
            }
        }
        let dir = match (&args.data_dir, &plan) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => p.data_dir.clone(),
            (None, None) => PathBuf::from("netfold-data"),
        };
        let db = store::layout::db_path(&dir);
        // A directory this user may not read (the packaged agent's, mode 750) is asked of the
        // agent as well.
        let unreadable =
            matches!(std::fs::File::open(db.join("db")), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied);
        if unreadable || store::Store::in_use(&db) {
            let mut agent = Agent::with_config(&args.agent, plan.as_ref())?;
            let why = if unreadable { "not readable by this user" } else { "in use (by a running agent?)" };
            agent.why = Some(format!("the data directory {} is {why}", dir.display()));
            tracing::debug!(data_dir = %dir.display(), agent = agent.url(), "the data directory is in use: asking the agent");
            return Ok(Source::Agent(agent));
        }
        Ok(Source::Local(Local::Dir(dir)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: Option<&Path>, config: Option<&Path>, agent: Option<&str>) -> DataDir {
        DataDir {
            data_dir: dir.map(Path::to_path_buf),
            agent: AgentArgs { config: config.map(Path::to_path_buf), agent: agent.map(str::to_string) },
        }
    }

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback_and_agent_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("netfold.toml");
        std::fs::write(&config, "data_dir = \"/nonexistent\"\n[http]\nlisten = \"0.0.0.0:9999\"\n").unwrap();
        let a = Agent::from_args(&args(None, Some(&config), None).agent).unwrap();
        assert_eq!(a.url(), "http://127.0.0.1:9999");
        let a = Agent::from_args(&args(None, Some(&config), Some("http://10.0.0.1:1/")).agent).unwrap();
        assert_eq!(a.url(), "http://10.0.0.1:1");
    }

    #[test]
    fn a_held_directory_is_asked_of_the_agent_a_free_one_read_and_agent_forces_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let held = store::Store::open(store::layout::db_path(dir.path())).unwrap();
        match Source::resolve(&args(Some(dir.path()), None, None)).unwrap() {
            Source::Agent(a) => assert!(a.why.as_deref().is_some_and(|w| w.contains("is in use")), "{:?}", a.why),
            Source::Local(_) => panic!("a held directory is read directly"),
        }
        drop(held);
        // sled lets go of its lock from background threads shortly after the last handle.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store::Store::in_use(store::layout::db_path(dir.path())) {
            assert!(std::time::Instant::now() < deadline, "the lock is still held");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(Source::resolve(&args(Some(dir.path()), None, None)).unwrap(), Source::Local(Local::Dir(_))));
        let forced = Source::resolve(&args(Some(dir.path()), None, Some("http://127.0.0.1:1"))).unwrap();
        assert!(matches!(forced, Source::Agent(a) if a.url() == "http://127.0.0.1:1"));
    }

    #[test]
    fn a_config_given_that_does_not_parse_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, "data_dir = 3\n").unwrap();
        let e = Source::resolve(&args(None, Some(&config), None)).err().expect("an error");
        assert!(format!("{e:#}").contains("bad.toml"), "{e:#}");
    }
}
