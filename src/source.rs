//! Where the audit commands and `status` get their answers: the data directory itself, or the
//! running agent's HTTP API ([`crate::http`]). sled lets one process open a database, so while
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
use serde::de::DeserializeOwned;

use crate::cli::{AgentArgs, DataDir};

/// The listen address the agent uses when the config does not say (`[http] listen`).
const DEFAULT_AGENT: &str = "http://127.0.0.1:9187";

/// The config file the command reads, when one is given or ./netfold.toml exists.
fn config(args: &AgentArgs) -> Result<Option<crate::config::Plan>> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None if Path::new("netfold.toml").is_file() => PathBuf::from("netfold.toml"),
        None => return Ok(None),
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
    /// The data directory, read directly (no agent holds it).
    Dir(PathBuf),
    /// The running agent's HTTP API.
    Agent(Agent),
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
    /// `--agent` forces the agent; otherwise the data directory (`--data-dir`, the config's,
    /// or ./netfold-data) is read directly unless a running agent holds it, then the agent is
    /// asked.
    pub fn resolve(args: &DataDir) -> Result<Source> {
        let plan = config(&args.agent)?;
        if args.agent.agent.is_some() {
            return Agent::with_config(&args.agent, plan.as_ref()).map(Source::Agent);
        }
        let dir = match (&args.data_dir, &plan) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => p.data_dir.clone(),
            (None, None) => PathBuf::from("netfold-data"),
        };
        if store::Store::in_use(store::layout::db_path(&dir)) {
            let mut agent = Agent::with_config(&args.agent, plan.as_ref())?;
            agent.why = Some(format!("the data directory {} is in use (by a running agent?)", dir.display()));
            tracing::debug!(data_dir = %dir.display(), agent = agent.url(), "the data directory is in use: asking the agent");
            return Ok(Source::Agent(agent));
        }
        Ok(Source::Dir(dir))
    }
}
