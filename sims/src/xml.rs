//! The simulators' own XML reader: a request body as an owned element tree, on quick-xml's
//! namespace-aware reader. It is written here, not shared with netfold's clients, so a mistake in
//! a client's decoder is not made on the peer's side of the same test.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Deeper requests are refused (no client netfold models nests this far).
const MAX_DEPTH: usize = 64;

/// One element: its local name and namespace, the `type` attribute (vSphere's managed object
/// references), the concatenated text directly inside it, and its child elements in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: Option<String>,
    pub type_attr: Option<String>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Element> + 's {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child with this local name.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parses a whole document into its root element; the error names the byte offset.
pub fn parse(bytes: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
    let mut reader = NsReader::from_str(text);
    let mut open: Vec<Element> = Vec::new();
    loop {
        let at = reader.buffer_position();
        let (ns, event) = reader.read_resolved_event().map_err(|e| format!("malformed XML at byte {at}: {e}"))?;
        match event {
            Event::Start(e) | Event::Empty(e) if open.len() >= MAX_DEPTH => {
                return Err(format!("nesting deeper than {MAX_DEPTH} at <{}>", String::from_utf8_lossy(e.name().0)));
            }
            Event::Start(e) => open.push(element(&e, ns, at)?),
            Event::Empty(e) => {
                let el = element(&e, ns, at)?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let done = open.pop().ok_or_else(|| format!("close tag without an open one at byte {at}"))?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| format!("bad text at byte {at}: {e}"))?;
                match open.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(format!("text outside the root element at byte {at}")),
                }
            }
            Event::CData(c) => {
                let s = std::str::from_utf8(&c).map_err(|_| format!("CDATA is not UTF-8 at byte {at}"))?;
                match open.last_mut() {
                    Some(el) => el.text.push_str(s),
                    None => return Err(format!("CDATA outside the root element at byte {at}")),
                }
            }
            Event::DocType(_) => return Err(format!("a DOCTYPE at byte {at}: no peer netfold models accepts one")),
            Event::Eof => return Err("the document ends before its root element closes".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

fn element(e: &BytesStart<'_>, ns: ResolveResult<'_>, at: u64) -> Result<Element, String> {
    let name = std::str::from_utf8(e.local_name().into_inner())
        .map_err(|_| format!("element name is not UTF-8 at byte {at}"))?
        .to_string();
    let ns = match ns {
        ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.into_inner()).into_owned()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(p) => {
            return Err(format!("<{name}> at byte {at} uses the undeclared prefix `{}`", String::from_utf8_lossy(&p)));
        }
    };
    let mut type_attr = None;
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute on <{name}> at byte {at}: {err}"))?;
        // The plain (unprefixed) `type` of a managed object reference, not `xsi:type`.
        if a.key.prefix().is_none() && a.key.local_name().into_inner() == b"type" {
            let v = a.unescape_value().map_err(|err| format!("bad attribute on <{name}> at byte {at}: {err}"))?;
            type_attr = Some(v.into_owned());
        }
    }
    Ok(Element { name, ns, type_attr, text: String::new(), children: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_type_attributes_entities_and_cdata() {
        let doc = br#"<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:x="http://www.w3.org/2001/XMLSchema-instance">
 <s:Body><Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>
 <userName>a&amp;b&#x41;</userName><password><![CDATA[p<w>]]></password><e x:type="Foo"/></Login></s:Body></s:Envelope>"#;
        let root = parse(doc).unwrap();
        assert_eq!(
            (root.name.as_str(), root.ns.as_deref()),
            ("Envelope", Some("http://schemas.xmlsoap.org/soap/envelope/"))
        );
        let login = &root.child("Body").unwrap().children[0];
        assert_eq!((login.name.as_str(), login.ns.as_deref()), ("Login", Some("urn:vim25")));
        assert_eq!(login.child("_this").unwrap().type_attr.as_deref(), Some("SessionManager"));
        assert_eq!(login.text_of("userName"), Some("a&bA"));
        assert_eq!(login.text_of("password"), Some("p<w>"));
        assert_eq!(login.child("e").unwrap().type_attr, None, "xsi:type is not the reference type");
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_where() {
        for (doc, says) in [
            (&b"<a><b></a>"[..], "malformed XML"),
            (b"<a>", "ends before"),
            (b"<p:a/>", "undeclared prefix"),
            (b"<!DOCTYPE a [<!ENTITY x \"y\">]><a/>", "DOCTYPE"),
            (b"<a>\xff</a>", "not UTF-8"),
        ] {
            let e = parse(doc).unwrap_err();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(doc));
        }
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(parse(deep.as_bytes()).unwrap_err().contains("nesting deeper"));
    }
}
