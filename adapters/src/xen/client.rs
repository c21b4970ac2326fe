//! The only module that touches the network: XenAPI calls as HTTP POSTs of XML-RPC bodies.
//!
//! [`Client`] sends one call and decodes xapi's status envelope through [`super::codec`];
//! [`Session`] adds the session ref (never logged) and typed wrappers for the calls the adapter
//! makes. Every call has a timeout; `event.from` gets a longer one than its own poll timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{read_limited, ExposeSecret as _, HttpClient, SecretString, Timeouts, TlsOptions};

use super::codec::{self, Response, Value};
use super::error::{Error, Result};

/// A XenAPI endpoint: URL plus an HTTP client with limits.
#[derive(Clone, Debug)]
pub struct Client {
    http: HttpClient,
    url: String,
    call_timeout: Duration,
}

impl Client {
    /// `timeouts.request` bounds every call but `event.from`, which gets its poll timeout on top;
    /// `timeouts.liveness` bounds how long xapi may send nothing.
    pub fn new(url: impl Into<String>, tls: &TlsOptions, timeouts: &Timeouts, max_body: usize) -> Result<Self> {
        let url = url.into();
        let call_timeout = timeouts.request;
        let http = HttpClient::new(tls, timeouts, max_body).map_err(|source| Error::Http {
            method: "connect".into(),
            url: url.clone(),
            source,
        })?;
        Ok(Self { http, url, call_timeout })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with the call timeout.
    pub async fn call(&self, method: &str, params: &[Value]) -> Result<Value> {
        self.call_with_timeout(method, params, self.call_timeout).await
    }

    /// Calls `method`; a `Failure` becomes [`Error::Api`].
    pub async fn call_with_timeout(&self, method: &str, params: &[Value], timeout: Duration) -> Result<Value> {
        let body = codec::encode_call(method, params);
        let http_err = |source| Error::Http { method: method.to_string(), url: self.url.clone(), source };
        let resp = self
            .http
            .client
            .post(&self.url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(body)
            .send()
            .await
            .map_err(|source| http_err(crate::common::HttpError::Request { url: self.url.clone(), source }))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Status { method: method.to_string(), url: self.url.clone(), status: status.as_u16() });
        }
        let bytes = read_limited(resp, self.http.max_body).await.map_err(http_err)?;
        let decoded = codec::decode_response(&bytes).map_err(|source| Error::Codec {
            method: method.to_string(),
            url: self.url.clone(),
            source,
        })?;
        match decoded {
            Response::Success(v) => Ok(v),
            Response::Failure(desc) => Err(Error::api(method, desc)),
            Response::Fault { code, message } => Err(Error::Api {
                method: method.to_string(),
                code: format!("XMLRPC_FAULT_{code}"),
                params: vec![message],
            }),
        }
    }
}

/// One `event.from` answer.
#[derive(Clone, Debug, PartialEq)]
pub struct EventBatch {
    pub events: Vec<XenEvent>,
    /// The token to pass to the next `event.from`.
    pub token: String,
}

/// One event record: `{id, timestamp, class, operation, ref, snapshot}`.
#[derive(Clone, Debug, PartialEq)]
pub struct XenEvent {
    pub class: String,
    pub operation: Operation,
    pub reference: String,
    /// The object after the change; absent on `del`.
    pub snapshot: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Add,
    Mod,
    Del,
}

/// A logged-in session. The session ref is a credential: it is never logged or displayed.
pub struct Session {
    client: Client,
    session: SecretString,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("url", &self.client.url).field("session", &"***").finish()
    }
}

fn shape(method: &str, why: impl Into<String>) -> Error {
    Error::Shape { method: method.to_string(), why: why.into() }
}

impl Session {
    /// `session.login_with_password(user, password, version, originator)`.
    pub async fn login(client: Client, user: &str, password: &SecretString) -> Result<Self> {
        let params = [Value::str(user), Value::str(password.expose_secret()), Value::str("1.0"), Value::str("netfold")];
        match client.call("session.login_with_password", &params).await {
            Ok(Value::Str(s)) => Ok(Self { client, session: SecretString::from(s) }),
            Ok(_) => Err(shape("session.login_with_password", "the session ref is not a string")),
            Err(Error::Api { code, .. }) if code == "SESSION_AUTHENTICATION_FAILED" => {
                Err(Error::AuthenticationFailed { url: client.url.clone(), user: user.to_string() })
            }
            Err(e) => Err(e),
        }
    }

    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// `session.logout`; errors are ignored by callers (the session may already be gone).
    pub async fn logout(&self) -> Result<()> {
        self.client.call("session.logout", &[self.sref()]).await.map(|_| ())
    }

    fn sref(&self) -> Value {
        Value::str(self.session.expose_secret())
    }

    /// `<class>.get_all_records`: ref → record.
    pub async fn get_all_records(&self, class: &str) -> Result<BTreeMap<String, Value>> {
        let method = format!("{class}.get_all_records");
        match self.client.call(&method, &[self.sref()]).await? {
            Value::Struct(m) => Ok(m),
            _ => Err(shape(&method, "expected a struct of ref → record")),
        }
    }

    /// `<class>.get_all`: every ref of the class.
    pub async fn get_all(&self, class: &str) -> Result<Vec<String>> {
        let method = format!("{class}.get_all");
        match self.client.call(&method, &[self.sref()]).await? {
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| shape(&method, "a ref is not a string")))
                .collect(),
            _ => Err(shape(&method, "expected an array of refs")),
        }
    }

    /// `event.inject(class, ref)`: an artificial event whose token marks "now" — read before
    /// `get_all_records`, it lets `event.from` resume with no gap and no second full read.
    pub async fn event_inject(&self, class: &str, reference: &str) -> Result<String> {
        match self.client.call("event.inject", &[self.sref(), Value::str(class), Value::str(reference)]).await? {
            Value::Str(t) => Ok(t),
            _ => Err(shape("event.inject", "the token is not a string")),
        }
    }

    /// `event.from(classes, token, timeout)`.
    pub async fn event_from(&self, classes: &[&str], token: &str, timeout_secs: f64) -> Result<EventBatch> {
        let method = "event.from";
        let params = [
            self.sref(),
            Value::Array(classes.iter().map(|c| Value::str(*c)).collect()),
            Value::str(token),
            Value::Double(timeout_secs),
        ];
        let http_timeout = Duration::from_secs_f64(timeout_secs) + self.client.call_timeout;
        let v = self.client.call_with_timeout(method, &params, http_timeout).await?;
        decode_event_batch(&v).map_err(|why| shape(method, why))
    }
}

/// Reads an `event.from` result struct `{events, valid_ref_counts, token}` (pure).
pub fn decode_event_batch(v: &Value) -> std::result::Result<EventBatch, String> {
    let token = v.get("token").and_then(Value::as_str).ok_or("no token")?.to_string();
    let events = v.get("events").and_then(Value::as_array).ok_or("no events array")?;
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let field =
            |name: &str| e.get(name).and_then(Value::as_str).ok_or_else(|| format!("event {i} has no string `{name}`"));
        let operation = match field("operation")? {
            "add" => Operation::Add,
            "mod" => Operation::Mod,
            "del" => Operation::Del,
            other => return Err(format!("event {i} has unknown operation `{other}`")),
        };
        out.push(XenEvent {
            class: field("class")?.to_string(),
            operation,
            reference: field("ref")?.to_string(),
            snapshot: e.get("snapshot").filter(|s| s.as_struct().is_some()).cloned(),
        });
    }
    Ok(EventBatch { events: out, token })
}
