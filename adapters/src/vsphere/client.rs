//! The vSphere SOAP transport: the only module that touches reqwest. A [`Session`] is one
//! logged-in connection: it POSTs SOAP envelopes to `…/sdk` with the `SOAPAction` of the
//! discovered API version and the `vmware_soap_session` cookie, checks status, content type and
//! size, and hands the bytes to [`super::codec`] (inventory and update replies object by object
//! through [`super::split`], so no reply is too large to read). The password and the cookie
//! are never logged.

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::StatusCode;

use super::codec::{self, MoRef, ObjectContent, ObjectUpdate, PnicHint, ServiceContent, UpdateSet};
use super::error::{Error, Result};
use super::split;
use crate::common::{read_limited, ExposeSecret as _, HttpClient, HttpError, SecretString};

/// One logged-in session with vCenter.
pub struct Session {
    http: HttpClient,
    url: String,
    user: String,
    soap_action: String,
    cookie: SecretString,
    /// The service content read at login.
    pub content: ServiceContent,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("url", &self.url).field("user", &self.user).finish_non_exhaustive()
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    cookie: Option<SecretString>,
}

/// Sends one SOAP request and checks the reply's status and content type; the body is left
/// to read.
async fn send(
    http: &HttpClient,
    url: &str,
    action: &str,
    cookie: Option<&SecretString>,
    body: String,
) -> Result<(reqwest::Response, Option<SecretString>)> {
    let mut req = http
        .client
        .post(url)
        .header(CONTENT_TYPE, "text/xml; charset=\"utf-8\"")
        .header("SOAPAction", format!("\"{action}\""))
        .body(body);
    if let Some(c) = cookie {
        // Marked sensitive: hyper and reqwest leave it out of their debug output.
        let mut value = reqwest::header::HeaderValue::from_str(c.expose_secret())
            .map_err(|_| Error::unexpected("Login", "the session cookie is not a valid header value"))?;
        value.set_sensitive(true);
        req = req.header(COOKIE, value);
    }
    let resp = req.send().await.map_err(|source| HttpError::Request { url: url.to_string(), source })?;
    let status = resp.status();
    let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|v| v.trim_start().starts_with("vmware_soap_session="))
        .map(|v| SecretString::from(v.trim()));
    if !(status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR) {
        return Err(Error::Status { url: url.to_string(), status: status.as_u16() });
    }
    if !codec::is_xml_content_type(&content_type) {
        return Err(Error::ContentType { url: url.to_string(), content_type, status: status.as_u16() });
    }
    Ok((resp, cookie))
}

async fn post(
    http: &HttpClient,
    url: &str,
    action: &str,
    cookie: Option<&SecretString>,
    body: String,
) -> Result<Reply> {
    let (resp, cookie) = send(http, url, action, cookie, body).await?;
    let status = resp.status();
    let body = read_limited(resp, http.max_body).await?;
    Ok(Reply { status, body, cookie })
}

/// Finds the `urn:vim25` API version: `/sdk/vimServiceVersions.xml`, else `None`.
async fn discover_version(http: &HttpClient, url: &str) -> Option<String> {
    let vurl = format!("{}/vimServiceVersions.xml", url.trim_end_matches('/'));
    let resp = http.client.get(&vurl).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = read_limited(resp, http.max_body).await.ok()?;
    codec::decode_service_versions(&body).ok()
}

impl Session {
    /// Reads the service content and logs in. [`Error::InvalidLogin`] for a wrong password.
    pub async fn login(http: &HttpClient, url: &str, user: &str, password: &SecretString) -> Result<Session> {
        let soap_action = match discover_version(http, url).await {
            Some(v) => format!("urn:vim25/{v}"),
            None => "urn:vim25".to_string(),
        };
        let reply = post(http, url, &soap_action, None, codec::retrieve_service_content()).await?;
        let content = codec::decode_service_content(&reply.body)?;
        let soap_action = match (&content.api_version, soap_action.as_str()) {
            (Some(v), "urn:vim25") => format!("urn:vim25/{v}"),
            _ => soap_action,
        };
        let reply =
            post(http, url, &soap_action, None, codec::login(&content.session_manager, user, password.expose_secret()))
                .await?;
        codec::decode_login(&reply.body, url, user)?;
        let cookie =
            reply.cookie.ok_or_else(|| Error::unexpected("Login", "no vmware_soap_session cookie in the reply"))?;
        tracing::info!(endpoint = url, user, soap_action = %soap_action, "vSphere login succeeded");
        Ok(Session { http: http.clone(), url: url.to_string(), user: user.to_string(), soap_action, cookie, content })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn call(&self, body: String) -> Result<Vec<u8>> {
        let reply = post(&self.http, &self.url, &self.soap_action, Some(&self.cookie), body).await?;
        tracing::trace!(status = reply.status.as_u16(), bytes = reply.body.len(), "SOAP reply");
        Ok(reply.body)
    }

    /// A call whose reply is read element by element ([`split`]): the skeleton's bytes and the
    /// `target` elements decoded, in reply order. `max_body` bounds each element and the
    /// skeleton, not the reply: servers that ignore paging (vcsim) are read all the same. A
    /// fault reply is read whole and returned as the skeleton.
    async fn call_split<T>(
        &self,
        body: String,
        target: split::Target,
        decode: fn(&codec::Node) -> Result<T>,
    ) -> Result<(Vec<u8>, Vec<T>)> {
        let (mut resp, _) = send(&self.http, &self.url, &self.soap_action, Some(&self.cookie), body).await?;
        if resp.status() != StatusCode::OK {
            return Ok((read_limited(resp, self.http.max_body).await?, Vec::new()));
        }
        let mut splitter = split::Splitter::new(target, self.http.max_body, &self.url, decode);
        let mut bytes = 0;
        while let Some(chunk) =
            resp.chunk().await.map_err(|source| HttpError::Request { url: self.url.clone(), source })?
        {
            bytes += chunk.len();
            splitter.feed(&chunk)?;
        }
        let (skeleton, items) = splitter.finish()?;
        tracing::trace!(bytes, elements = items.len(), "SOAP reply read element by element");
        Ok((skeleton, items))
    }

    /// `Logout`, best effort.
    pub async fn logout(&self) -> Result<()> {
        let b = self.call(codec::logout(&self.content.session_manager)).await?;
        codec::decode_void(&b, "Logout")
    }

    /// `CreateContainerView` over the root folder for these types.
    pub async fn create_container_view(&self, types: &[&str]) -> Result<MoRef> {
        let b = self
            .call(codec::create_container_view(&self.content.view_manager, &self.content.root_folder, types))
            .await?;
        codec::decode_moref(&b, "CreateContainerView")
    }

    /// `CreatePropertyCollector` on the service's collector: one of this session's own.
    pub async fn create_property_collector(&self) -> Result<MoRef> {
        let b = self.call(codec::create_property_collector(&self.content.property_collector)).await?;
        codec::decode_moref(&b, "CreatePropertyCollector")
    }

    /// `DestroyPropertyCollector`.
    pub async fn destroy_property_collector(&self, collector: &MoRef) -> Result<()> {
        let b = self.call(codec::destroy_property_collector(collector)).await?;
        codec::decode_void(&b, "DestroyPropertyCollector")
    }

    /// `DestroyPropertyFilter`.
    pub async fn destroy_filter(&self, filter: &MoRef) -> Result<()> {
        let b = self.call(codec::destroy_property_filter(filter)).await?;
        codec::decode_void(&b, "DestroyPropertyFilter")
    }

    /// Every object matching `spec`, following `token`s page by page, on collector `pc`.
    /// Each page is read object by object (see `Session::call_split`).
    pub async fn retrieve_all(&self, pc: &MoRef, spec: &str, page: u32) -> Result<Vec<ObjectContent>> {
        let (b, mut objects) = self
            .call_split(codec::retrieve_properties_ex(pc, spec, page), split::RETRIEVE_OBJECTS, |n| {
                codec::object_content(n, "RetrievePropertiesEx")
            })
            .await?;
        let mut res = codec::decode_retrieve(&b, "RetrievePropertiesEx")?;
        objects.append(&mut res.objects);
        let mut pages = 1;
        while let Some(token) = res.token.take() {
            let (b, mut more) = self
                .call_split(codec::continue_retrieve_properties_ex(pc, &token), split::RETRIEVE_OBJECTS, |n| {
                    codec::object_content(n, "ContinueRetrievePropertiesEx")
                })
                .await?;
            res = codec::decode_retrieve(&b, "ContinueRetrievePropertiesEx")?;
            objects.append(&mut more);
            objects.append(&mut res.objects);
            pages += 1;
        }
        tracing::debug!(objects = objects.len(), pages, "retrieved properties");
        Ok(objects)
    }

    /// `CreateFilter` on collector `pc`.
    pub async fn create_filter(&self, pc: &MoRef, spec: &str) -> Result<MoRef> {
        let b = self.call(codec::create_filter(pc, spec)).await?;
        codec::decode_moref(&b, "CreateFilter")
    }

    /// One `WaitForUpdatesEx`; `None` when nothing changed within `max_wait_seconds`. Read
    /// update by update (see `Session::call_split`).
    pub async fn wait_for_updates(
        &self,
        pc: &MoRef,
        version: String,
        max_wait_seconds: u32,
        max_objects: u32,
    ) -> Result<Option<UpdateSet>> {
        let body = codec::wait_for_updates_ex(pc, &version, max_wait_seconds, max_objects);
        let (b, objects) = self.call_split(body, split::UPDATE_OBJECTS, codec::object_update).await?;
        let mut us = codec::decode_updates(&b)?;
        if let Some(us) = us.as_mut() {
            us.objects.splice(0..0, objects);
        } else if !objects.is_empty() {
            return Err(Error::unexpected("WaitForUpdatesEx", "object updates without an UpdateSet"));
        }
        Ok(us)
    }

    /// A new filter's first update sets, page by page (`maxObjectUpdates` = `page`): every object
    /// the filter covers, as `enter` with all its properties, and the version to follow from.
    /// Asked with `maxWaitSeconds` 0 (one update calculation), so a filter that covers nothing
    /// answers at once: no update set, no objects, and following starts from the version `""`.
    pub async fn initial_updates(&self, pc: &MoRef, page: u32) -> Result<(Vec<ObjectUpdate>, String)> {
        let mut version = String::new();
        let mut objects = Vec::new();
        let mut pages = 0;
        while let Some(us) = self.wait_for_updates(pc, version.clone(), 0, page).await? {
            version = us.version;
            objects.extend(us.objects);
            pages += 1;
            if !us.truncated {
                break;
            }
        }
        tracing::debug!(objects = objects.len(), pages, "read a new filter's initial update sets");
        Ok((objects, version))
    }

    /// `QueryNetworkHint` on a host's network system.
    pub async fn query_network_hint(&self, network_system: &MoRef) -> Result<Vec<PnicHint>> {
        let b = self.call(codec::query_network_hint(network_system)).await?;
        codec::decode_network_hints(&b)
    }
}
