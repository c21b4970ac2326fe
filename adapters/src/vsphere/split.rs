//! Reading a large SOAP reply element by element, so that no reply is too large to read.
//!
//! vCenter pages `RetrievePropertiesEx` (`maxObjects`) and `WaitForUpdatesEx`
//! (`maxObjectUpdates`), but not every server does: vcsim ignores both, and answers 12,000 VMs
//! in one reply past any sensible byte cap. A [`Splitter`] is fed the reply as it arrives and
//! cuts out each repeated element of interest ([`Target`]: a retrieve's `objects`, an update
//! set's `objectSet`) as soon as it is complete; the element is decoded at once (with the
//! namespace declarations of its ancestors) and its bytes dropped. What remains, the
//! *skeleton* (envelope, token, version, truncated, faults), is decoded as a whole document by
//! the codec. The byte cap then bounds each element and the skeleton, not the reply. Pure: the
//! client feeds it chunks; no IO here.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::codec::{parse_tree, Node};
use super::error::{Error, Result};

/// Which repeated element to cut out: local name, its parent's local name, and its depth (the
/// envelope is depth 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: &'static str,
    pub parent: &'static str,
    pub depth: usize,
}

/// `Envelope/Body/RetrievePropertiesExResponse/returnval/objects`.
pub const RETRIEVE_OBJECTS: Target = Target { name: "objects", parent: "returnval", depth: 4 };
/// `Envelope/Body/WaitForUpdatesExResponse/returnval/filterSet/objectSet`.
pub const UPDATE_OBJECTS: Target = Target { name: "objectSet", parent: "filterSet", depth: 5 };

/// One open element on the path to the read position: its local name and the namespace
/// declarations it makes (`xmlns`, `xmlns:p`).
struct Open {
    name: String,
    xmlns: Vec<(String, String)>,
}

/// Splits one reply; `T` is what each cut-out element decodes to.
pub struct Splitter<T> {
    target: Target,
    limit: usize,
    url: String,
    decode: fn(&Node) -> Result<T>,
    /// Bytes not yet moved to the skeleton or cut out; `buf[..scanned]` has been read.
    buf: Vec<u8>,
    scanned: usize,
    /// Start of the target element being read, in `buf`.
    element_start: Option<usize>,
    path: Vec<Open>,
    skeleton: Vec<u8>,
    items: Vec<T>,
}

impl<T> Splitter<T> {
    /// A splitter of the reply from `url` whose elements and skeleton may each be at most
    /// `limit` bytes.
    pub fn new(target: Target, limit: usize, url: &str, decode: fn(&Node) -> Result<T>) -> Self {
        Splitter {
            target,
            limit,
            url: url.to_string(),
            decode,
            buf: Vec::new(),
            scanned: 0,
            element_start: None,
            path: Vec::new(),
            skeleton: Vec::new(),
            items: Vec::new(),
        }
    }

    /// Reads the next chunk of the reply. An element or a skeleton over the limit is
    /// [`Error::Http`] `TooLarge`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(chunk);
        self.scan()?;
        // What was read and lies outside an element goes to the skeleton.
        let keep = self.element_start.unwrap_or(self.scanned);
        self.skeleton.extend_from_slice(&self.buf[..keep]);
        self.buf.drain(..keep);
        self.scanned -= keep;
        if let Some(s) = self.element_start.as_mut() {
            *s -= keep;
        }
        if self.skeleton.len() > self.limit || self.buf.len() > self.limit {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn too_large(&self) -> Error {
        crate::common::HttpError::TooLarge { url: self.url.clone(), limit: self.limit }.into()
    }

    /// The end of the reply: the skeleton's bytes and the decoded elements, in reply order.
    pub fn finish(mut self) -> Result<(Vec<u8>, Vec<T>)> {
        if self.element_start.is_some() {
            let what = format!("the reply ended inside <{}>", self.target.name);
            return Err(Error::malformed("XML", what));
        }
        self.skeleton.append(&mut self.buf);
        Ok((self.skeleton, self.items))
    }

    /// Reads every complete event of `buf[scanned..]`; stops at an incomplete one (the next
    /// chunk completes it; a malformed one is left to the skeleton's or element's decoder).
    fn scan(&mut self) -> Result<()> {
        loop {
            let mut reader = Reader::from_reader(&self.buf[self.scanned..]);
            // Elements opened in an earlier chunk close in this one.
            reader.config_mut().check_end_names = false;
            reader.config_mut().allow_unmatched_ends = true;
            let ev = match reader.read_event() {
                Ok(Event::Eof) | Err(_) => return Ok(()),
                Ok(ev) => ev,
            };
            // A text event at the end of the buffer may continue in the next chunk; it is
            // only consumed once something follows it.
            let end = self.scanned + reader.buffer_position() as usize;
            let complete = !matches!(ev, Event::Text(_)) || end < self.buf.len();
            if !complete {
                return Ok(());
            }
            let start = self.scanned;
            self.scanned = end;
            match ev {
                Event::Start(e) => {
                    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    let is_target = self.element_start.is_none()
                        && self.path.len() == self.target.depth
                        && name == self.target.name
                        && self.path.last().is_some_and(|p| p.name == self.target.parent);
                    if is_target {
                        self.element_start = Some(start);
                    }
                    let xmlns = e
                        .attributes()
                        .flatten()
                        .filter(|a| a.key.as_ref() == b"xmlns" || a.key.as_ref().starts_with(b"xmlns:"))
                        .map(|a| {
                            let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                            (k, String::from_utf8_lossy(&a.value).into_owned())
                        })
                        .collect();
                    self.path.push(Open { name, xmlns });
                }
                Event::End(_) => {
                    self.path.pop();
                    if self.path.len() == self.target.depth {
                        if let Some(s) = self.element_start.take() {
                            self.cut(s, end)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Decodes `buf[start..end]`, one target element, inside a wrapper that declares the
    /// namespaces of its ancestors, and drops its bytes.
    fn cut(&mut self, start: usize, end: usize) -> Result<()> {
        if end - start > self.limit {
            return Err(self.too_large());
        }
        let mut decls: Vec<&(String, String)> = Vec::new();
        for d in self.path.iter().flat_map(|o| &o.xmlns) {
            decls.retain(|x| x.0 != d.0);
            decls.push(d);
        }
        let mut doc = String::from("<wrap");
        for (k, v) in decls {
            // Values were read raw (still escaped) from well-formed attributes.
            doc.push_str(&format!(" {k}=\"{v}\""));
        }
        doc.push('>');
        let mut bytes = doc.into_bytes();
        bytes.extend_from_slice(&self.buf[start..end]);
        bytes.extend_from_slice(b"</wrap>");
        let tree = parse_tree(&bytes)?;
        let node = tree.children.iter().find(|c| c.name == self.target.name).ok_or_else(|| {
            Error::malformed("XML", format!("<{}> cut out of the reply did not parse as one", self.target.name))
        })?;
        self.items.push((self.decode)(node)?);
        self.buf.drain(start..end);
        self.scanned -= end - start;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::codec::{self, ObjectContent};

    fn reply(n: usize) -> String {
        let objects: String = (0..n)
            .map(|i| {
                format!(
                    "<objects><obj type=\"VirtualMachine\">vm-{i}</obj><propSet><name>name</name>\
                     <val xsi:type=\"xsd:string\">vm &amp; {i}</val></propSet></objects>"
                )
            })
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
             <soapenv:Body><RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><token>t-1</token>{objects}\
             </returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"
        )
    }

    fn split(xml: &[u8], chunk: usize, limit: usize) -> Result<(Vec<u8>, Vec<ObjectContent>)> {
        let mut s = Splitter::new(RETRIEVE_OBJECTS, limit, "http://vc/sdk", |n| {
            codec::object_content(n, "RetrievePropertiesEx")
        });
        for c in xml.chunks(chunk) {
            s.feed(c)?;
        }
        s.finish()
    }

    #[test]
    fn a_reply_cut_at_any_byte_decodes_as_the_whole_reply() {
        let xml = reply(40);
        let whole = codec::decode_retrieve(xml.as_bytes(), "RetrievePropertiesEx").unwrap();
        for chunk in [1, 7, 64, 1000, xml.len()] {
            let (skeleton, objects) = split(xml.as_bytes(), chunk, 1 << 20).unwrap();
            assert_eq!(objects, whole.objects, "chunk {chunk}");
            let rest = codec::decode_retrieve(&skeleton, "RetrievePropertiesEx").unwrap();
            assert_eq!((rest.token.as_deref(), rest.objects.len()), (Some("t-1"), 0), "chunk {chunk}");
        }
    }

    #[test]
    fn the_limit_bounds_each_element_and_the_skeleton_not_the_reply() {
        let xml = reply(2_000);
        assert!(xml.len() > 200_000);
        let (_, objects) = split(xml.as_bytes(), 4096, 8192).unwrap();
        assert_eq!(objects.len(), 2_000);
        let big = xml.replace("vm &amp; 7<", &format!("{}<", "x".repeat(10_000)));
        let e = split(big.as_bytes(), 4096, 8192).unwrap_err().to_string();
        assert!(e.contains("8192-byte limit"), "{e}");
    }

    #[test]
    fn a_reply_ending_inside_an_element_is_malformed() {
        let xml = reply(3);
        let cut = &xml.as_bytes()[..xml.find("vm-2").unwrap()];
        assert!(split(cut, 100, 1 << 20).unwrap_err().to_string().contains("ended inside <objects>"));
    }
}
