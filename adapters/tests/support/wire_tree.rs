//! An XML document as a tree of namespace-resolved names, for comparing netfold's request
//! bodies with the vendors' own clients' (golden wire tests). What the comparison ignores, and
//! nothing else:
//! - the XML declaration, comments and processing instructions;
//! - text that is only whitespace between elements (pretty-printing); other text is kept byte
//!   for byte after entity and CDATA decoding (`&quot;` and `"` are the same text);
//! - namespace prefixes: element and attribute names are `{namespace-uri}local`, namespace
//!   declarations are not attributes, and an `xsi:type` value (a QName) is resolved the same way
//!   against the declarations in scope (an unprefixed one takes the default namespace);
//! - attribute order (attributes are a sorted map).
//!
//! Element order and every element, attribute and text are compared. Protocol-specific
//! equivalences (XML-RPC's untyped string) are separate, named passes.
#![allow(dead_code)] // each test binary uses a different part of this shared helper

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, QName, ResolveResult};
use quick_xml::NsReader;

const NS_XSI: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

/// One element: resolved name, attributes, children in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub children: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Element(Element),
    Text(String),
}

fn resolved(r: &ResolveResult<'_>, local: &[u8]) -> String {
    let local = String::from_utf8_lossy(local);
    match r {
        ResolveResult::Bound(Namespace(ns)) => format!("{{{}}}{local}", String::from_utf8_lossy(ns)),
        ResolveResult::Unbound => local.into_owned(),
        ResolveResult::Unknown(p) => format!("{{unknown prefix {}}}{local}", String::from_utf8_lossy(p)),
    }
}

fn element(reader: &NsReader<&[u8]>, s: &BytesStart<'_>) -> Result<Element, String> {
    let (r, local) = reader.resolve_element(s.name());
    let name = resolved(&r, local.as_ref());
    let mut attrs = BTreeMap::new();
    for a in s.attributes() {
        let a = a.map_err(|e| format!("<{name}>: bad attribute: {e}"))?;
        let key = a.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let (ar, local) = reader.resolve_attribute(a.key);
        let value = a.unescape_value().map_err(|e| format!("<{name}>: attribute value: {e}"))?.into_owned();
        let is_xsi_type =
            matches!(ar, ResolveResult::Bound(Namespace(ns)) if ns == NS_XSI) && local.as_ref() == b"type";
        let value = if is_xsi_type {
            let (vr, vlocal) = reader.resolve_element(QName(value.as_bytes()));
            resolved(&vr, vlocal.as_ref())
        } else {
            value
        };
        attrs.insert(resolved(&ar, local.as_ref()), value);
    }
    Ok(Element { name, attrs, children: Vec::new() })
}

/// Parses a whole document into its root element.
pub fn parse(xml: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(xml).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let push = |stack: &mut Vec<Element>, root: &mut Option<Element>, e: Element| -> Result<(), String> {
        match stack.last_mut() {
            Some(parent) => parent.children.push(Item::Element(e)),
            None if root.is_none() => *root = Some(e),
            None => return Err("a second root element".into()),
        }
        Ok(())
    };
    loop {
        let at = reader.buffer_position();
        let ev = reader.read_event().map_err(|e| format!("at byte {at}: {e}"))?;
        match ev {
            Event::Start(s) => {
                let e = element(&reader, &s)?;
                stack.push(e);
            }
            Event::Empty(s) => {
                let e = element(&reader, &s)?;
                push(&mut stack, &mut root, e)?;
            }
            Event::End(_) => {
                let e = stack.pop().ok_or("an end tag without a start")?;
                push(&mut stack, &mut root, e)?;
            }
            Event::Text(t) => {
                let t = t.unescape().map_err(|e| format!("text: {e}"))?;
                add_text(&mut stack, &t);
            }
            Event::CData(c) => {
                let t = String::from_utf8(c.into_inner().into_owned()).map_err(|e| format!("CDATA: {e}"))?;
                add_text(&mut stack, &t);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(format!("<{}> never closed", stack.last().map(|e| e.name.as_str()).unwrap_or("?")));
    }
    let mut root = root.ok_or("no root element")?;
    drop_blank_text(&mut root);
    Ok(root)
}

fn add_text(stack: &mut [Element], t: &str) {
    if let Some(parent) = stack.last_mut() {
        match parent.children.last_mut() {
            Some(Item::Text(prev)) => prev.push_str(t),
            _ => parent.children.push(Item::Text(t.to_string())),
        }
    }
}

/// Whitespace-only text in an element that also has child elements is formatting.
fn drop_blank_text(e: &mut Element) {
    let has_elements = e.children.iter().any(|c| matches!(c, Item::Element(_)));
    if has_elements {
        e.children.retain(|c| !matches!(c, Item::Text(t) if t.trim().is_empty()));
    }
    for c in &mut e.children {
        if let Item::Element(c) = c {
            drop_blank_text(c);
        }
    }
}

impl Element {
    /// The first child element with this resolved name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|c| if let Item::Element(e) = c { Some(e) } else { None })
    }

    /// The element's own text (its text children joined).
    pub fn text(&self) -> String {
        self.children.iter().filter_map(|c| if let Item::Text(t) = c { Some(t.as_str()) } else { None }).collect()
    }

    /// Applies `f` to every element, depth first (children before their parent).
    pub fn walk_mut(&mut self, f: &mut impl FnMut(&mut Element)) {
        for c in &mut self.children {
            if let Item::Element(e) = c {
                e.walk_mut(f);
            }
        }
        f(self);
    }

    /// An indented rendering, one element or text per line, for failure messages.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, 0);
        out
    }

    fn render_into(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let _ = write!(out, "{pad}<{}", self.name);
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}={v:?}");
        }
        out.push_str(">\n");
        for c in &self.children {
            match c {
                Item::Element(e) => e.render_into(out, depth + 1),
                Item::Text(t) => {
                    let _ = writeln!(out, "{pad}  {t:?}");
                }
            }
        }
    }
}

/// The first place two trees differ, as a path (`/root/child[index]/…`) and the two sides;
/// `None` when equal.
pub fn first_difference(a: &Element, b: &Element) -> Option<String> {
    fn walk(a: &Element, b: &Element, path: &str) -> Option<String> {
        if a.name != b.name {
            return Some(format!("{path}: element {} vs {}", a.name, b.name));
        }
        if a.attrs != b.attrs {
            return Some(format!("{path}: attributes {:?} vs {:?}", a.attrs, b.attrs));
        }
        for (i, pair) in a.children.iter().zip(&b.children).enumerate() {
            match pair {
                (Item::Element(x), Item::Element(y)) => {
                    if let Some(d) = walk(x, y, &format!("{path}/{}[{i}]", x.name)) {
                        return Some(d);
                    }
                }
                (Item::Text(x), Item::Text(y)) if x == y => {}
                (x, y) => return Some(format!("{path} child {i}: {x:?} vs {y:?}")),
            }
        }
        if a.children.len() != b.children.len() {
            return Some(format!("{path}: {} children vs {}", a.children.len(), b.children.len()));
        }
        None
    }
    walk(a, b, &format!("/{}", a.name))
}

/// XML-RPC's one equivalence: "if no type is indicated, the type is string" (the XML-RPC
/// spec), so an untyped `<value>T</value>` (xapi's own form, which netfold writes) becomes
/// `<value><string>T</string></value>` (XenAPI.py's form), and `<value/>` an empty `<string>`.
/// Typed values are left alone.
pub fn xmlrpc_typed_strings(root: &mut Element) {
    root.walk_mut(&mut |e| {
        if e.name == "value" && !e.children.iter().any(|c| matches!(c, Item::Element(_))) {
            let text = e.text();
            let children = if text.is_empty() { Vec::new() } else { vec![Item::Text(text)] };
            e.children = vec![Item::Element(Element { name: "string".into(), attrs: BTreeMap::new(), children })];
        }
    });
}
