//! XML-RPC as xapi speaks it: pure encoding and decoding over bytes, no IO.
//!
//! Sits between [`super::client`] (which moves the bytes) and [`super::mapping`] (which reads
//! records). xapi's dialect differs from textbook XML-RPC in ways this codec accepts on input
//! and reproduces on output:
//! - strings usually come bare (`<value>text</value>`), sometimes typed (`<value><string>`);
//!   an empty string is `<value/>`, `<value></value>` or `<string/>`;
//! - 64-bit `int` fields (`PIF.VLAN`, `VLAN.tag`, `host.API_version_major`) travel as decimal
//!   strings, so readers use [`Value::as_int`], which takes either form;
//! - booleans are `<boolean>0|1</boolean>`; sets are arrays; maps and records are structs;
//! - every result is the struct `{Status: Success, Value}` or
//!   `{Status: Failure, ErrorDescription: [code, params...]}` ([`Response`]).
//!
//! Nesting is limited to [`MAX_DEPTH`] so hostile input cannot exhaust the stack; every error
//! says what was expected and at which byte offset.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest nesting of arrays and structs accepted.
pub const MAX_DEPTH: usize = 64;

/// One XML-RPC value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// `dateTime.iso8601`, kept as text (xapi: `20231105T10:00:00Z`).
    DateTime(String),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`, sent by clients with `allow_none`; xapi itself never sends it.
    Nil,
}

/// A decoded `methodResponse`: xapi's status envelope, or a textbook XML-RPC fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Success(Value),
    /// `ErrorDescription`: the code first (`SESSION_INVALID`), then its parameters.
    Failure(Vec<String>),
    /// An XML-RPC `<fault>` (xapi sends these only for requests it cannot parse at all).
    Fault {
        code: i64,
        message: String,
    },
}

/// Bytes that are not the XML-RPC expected. Never retryable: the same bytes fail again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("XML-RPC body is not UTF-8 (at byte {offset})")]
    Utf8 { offset: usize },
    #[error("malformed XML at byte {offset}: {reason}")]
    Xml { offset: usize, reason: String },
    #[error("unexpected XML-RPC at byte {offset}: expected {expected}, found {found}")]
    Unexpected { offset: usize, expected: &'static str, found: String },
    #[error("bad {kind} value `{text}` at byte {offset}")]
    Scalar { offset: usize, kind: &'static str, text: String },
    #[error(
        "struct member `{name}` appears twice in one struct ({copies}, at byte {offset}): neither copy is \
         trusted"
    )]
    DuplicateMember { name: String, copies: Box<str>, offset: usize },
    #[error("XML-RPC nesting deeper than {MAX_DEPTH} at byte {offset}")]
    TooDeep { offset: usize },
    #[error("xapi status envelope is malformed: {0}")]
    Envelope(String),
}

pub type Result<T, E = CodecError> = std::result::Result<T, E>;

impl Value {
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    /// The text of a string (bare or typed) value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::DateTime(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, given either as `<int>` or — as xapi sends 64-bit ints — a decimal string.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A boolean, given as `<boolean>` or (tolerated) the strings `true`/`false`/`1`/`0`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match s.as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_struct(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// A member of a struct value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_struct().and_then(|s| s.get(name))
    }

    /// A short rendering for error messages: the kind and, for scalars, up to 40 characters.
    fn preview(&self) -> String {
        let text = match self {
            Value::Str(s) | Value::DateTime(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Double(d) => d.to_string(),
            _ => return self.kind().to_string(),
        };
        format!("{} `{}`", self.kind(), text.chars().take(40).collect::<String>())
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Bool(_) => "boolean",
            Value::Double(_) => "double",
            Value::DateTime(_) => "dateTime",
            Value::Array(_) => "array",
            Value::Struct(_) => "struct",
            Value::Nil => "nil",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Writes one `<value>`. Strings are written bare, as xapi does (`<value/>` when empty).
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) if s.is_empty() => out.push_str("<value/>"),
        Value::Str(s) => {
            out.push_str("<value>");
            escape_into(out, s);
            out.push_str("</value>");
        }
        Value::Int(i) => {
            let _ = write!(out, "<value><int>{i}</int></value>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<value><boolean>{}</boolean></value>", u8::from(*b));
        }
        Value::Double(d) => {
            let _ = write!(out, "<value><double>{d:?}</double></value>");
        }
        Value::DateTime(s) => {
            out.push_str("<value><dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601></value>");
        }
        Value::Array(a) => {
            out.push_str("<value><array><data>");
            for v in a {
                write_value(out, v);
            }
            out.push_str("</data></array></value>");
        }
        Value::Struct(m) => {
            out.push_str("<value><struct>");
            for (k, v) in m {
                out.push_str("<member><name>");
                escape_into(out, k);
                out.push_str("</name>");
                write_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
        Value::Nil => out.push_str("<value><nil/></value>"),
    }
}

/// A `methodCall` body.
pub fn encode_call(method: &str, params: &[Value]) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        write_value(&mut out, p);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A significant token: the start or end of an element, or non-blank text.
enum Tok<'a> {
    Open(Name<'a>),
    /// An empty element `<x/>`.
    Empty(Name<'a>),
    Close(Name<'a>),
    Text(std::borrow::Cow<'a, str>),
    Eof,
}

/// An element name, borrowed from the input where possible.
#[derive(Debug)]
struct Name<'a>(std::borrow::Cow<'a, [u8]>);

impl Name<'_> {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("?")
    }
}

impl PartialEq<&str> for Name<'_> {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == other.as_bytes()
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Open(n) => format!("<{n}>"),
            Tok::Empty(n) => format!("<{n}/>"),
            Tok::Close(n) => format!("</{n}>"),
            Tok::Text(t) => format!("text `{}`", t.chars().take(40).collect::<String>()),
            Tok::Eof => "end of document".to_string(),
        }
    }
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    src: &'a str,
    peeked: Option<(usize, Tok<'a>)>,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self> {
        let src = std::str::from_utf8(bytes).map_err(|e| CodecError::Utf8 { offset: e.valid_up_to() })?;
        let reader = Reader::from_str(src);
        Ok(Self { reader, src, peeked: None })
    }

    fn offset(&self) -> usize {
        self.reader.buffer_position() as usize
    }

    fn xml_err(&self, e: impl std::fmt::Display) -> CodecError {
        CodecError::Xml { offset: self.offset(), reason: e.to_string() }
    }

    /// The next event including text, whitespace kept (for scalar contents).
    fn raw(&mut self) -> Result<(usize, Tok<'a>)> {
        if let Some(p) = self.peeked.take() {
            return Ok(p);
        }
        loop {
            let at = self.offset();
            let ev = self.reader.read_event().map_err(|e| self.xml_err(e))?;
            let tok = match ev {
                Event::Start(s) => Tok::Open(self.name(at + 1, s.name().as_ref())),
                Event::Empty(s) => Tok::Empty(self.name(at + 1, s.name().as_ref())),
                Event::End(e) => Tok::Close(self.name(at + 2, e.name().as_ref())),
                Event::Text(t) => Tok::Text(t.unescape().map_err(|e| self.xml_err(e))?),
                Event::CData(c) => {
                    let s = std::str::from_utf8(&c.into_inner())
                        .map_err(|e| CodecError::Utf8 { offset: at + e.valid_up_to() })?
                        .to_string();
                    Tok::Text(s.into())
                }
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => continue,
                Event::Eof => Tok::Eof,
            };
            return Ok((at, tok));
        }
    }

    /// An element name as a slice of the input (no allocation) when it sits at `start`.
    fn name(&self, start: usize, parsed: &[u8]) -> Name<'a> {
        let src: &'a str = self.src;
        match src.as_bytes().get(start..start + parsed.len()) {
            Some(b) if b == parsed => Name(std::borrow::Cow::Borrowed(b)),
            _ => Name(std::borrow::Cow::Owned(parsed.to_vec())),
        }
    }

    /// The next structural token, skipping blank text between elements.
    fn next(&mut self) -> Result<(usize, Tok<'a>)> {
        loop {
            let (at, t) = self.raw()?;
            match &t {
                Tok::Text(s) if s.trim().is_empty() => continue,
                _ => return Ok((at, t)),
            }
        }
    }

    fn peek(&mut self) -> Result<&Tok<'a>> {
        if self.peeked.is_none() {
            let t = self.next()?;
            self.peeked = Some(t);
        }
        Ok(&self.peeked.as_ref().expect("just filled").1)
    }

    fn unexpected(at: usize, expected: &'static str, found: &Tok<'_>) -> CodecError {
        CodecError::Unexpected { offset: at, expected, found: found.describe() }
    }

    fn open(&mut self, name: &'static str) -> Result<()> {
        match self.next()? {
            (_, Tok::Open(n)) if n == name => Ok(()),
            (at, t) => Err(Self::unexpected(at, name, &t)),
        }
    }

    /// `<name>` (returns true) or `<name/>` (returns false: nothing inside).
    fn open_or_empty(&mut self, name: &'static str) -> Result<bool> {
        match self.next()? {
            (_, Tok::Open(n)) if n == name => Ok(true),
            (_, Tok::Empty(n)) if n == name => Ok(false),
            (at, t) => Err(Self::unexpected(at, name, &t)),
        }
    }

    fn close(&mut self, name: &'static str) -> Result<()> {
        match self.next()? {
            (_, Tok::Close(n)) if n == name => Ok(()),
            (at, t) => Err(Self::unexpected(at, name, &t)),
        }
    }

    /// Text up to `</name>` (whitespace kept), already past the opening tag.
    fn text_until(&mut self, name: &'static str) -> Result<String> {
        let mut acc = String::new();
        loop {
            match self.raw()? {
                (_, Tok::Text(t)) => acc.push_str(&t),
                (_, Tok::Close(n)) if n == name => return Ok(acc),
                (at, t) => return Err(Self::unexpected(at, "text", &t)),
            }
        }
    }

    /// A `<value>…</value>` or `<value/>`.
    fn value(&mut self, depth: usize) -> Result<Value> {
        let (at, t) = self.next()?;
        match t {
            Tok::Empty(n) if n == "value" => return Ok(Value::Str(String::new())),
            Tok::Open(n) if n == "value" => {}
            t => return Err(Self::unexpected(at, "<value>", &t)),
        }
        self.value_body(at, depth)
    }

    fn value_body(&mut self, at: usize, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { offset: at });
        }
        // Bare string: text (possibly blank) directly inside <value>.
        let mut bare = String::new();
        let (tat, tok) = loop {
            match self.raw()? {
                (_, Tok::Text(t)) => bare.push_str(&t),
                other => break other,
            }
        };
        let v = match tok {
            Tok::Close(n) if n == "value" => return Ok(Value::Str(bare)),
            _ if !bare.trim().is_empty() => {
                return Err(Self::unexpected(tat, "</value> after a bare string", &tok));
            }
            Tok::Empty(n) => match n.as_str() {
                "string" => Value::Str(String::new()),
                "nil" => Value::Nil,
                "struct" => Value::Struct(BTreeMap::new()),
                "array" => Value::Array(Vec::new()),
                _ => return Err(Self::unexpected(tat, "a typed value", &Tok::Empty(n))),
            },
            Tok::Open(n) => match n.as_str() {
                "string" => Value::Str(self.text_until("string")?),
                "int" | "i4" | "i8" => {
                    let tag: &'static str = match n.as_str() {
                        "int" => "int",
                        "i4" => "i4",
                        _ => "i8",
                    };
                    let s = self.text_until(tag)?;
                    Value::Int(s.trim().parse().map_err(|_| CodecError::Scalar {
                        offset: tat,
                        kind: "int",
                        text: s,
                    })?)
                }
                "boolean" => {
                    let s = self.text_until("boolean")?;
                    match s.trim() {
                        "1" => Value::Bool(true),
                        "0" => Value::Bool(false),
                        _ => return Err(CodecError::Scalar { offset: tat, kind: "boolean", text: s }),
                    }
                }
                "double" => {
                    let s = self.text_until("double")?;
                    Value::Double(s.trim().parse().map_err(|_| CodecError::Scalar {
                        offset: tat,
                        kind: "double",
                        text: s,
                    })?)
                }
                "dateTime.iso8601" => Value::DateTime(self.text_until("dateTime.iso8601")?),
                "nil" => {
                    self.close("nil")?;
                    Value::Nil
                }
                "array" => {
                    let mut items = Vec::new();
                    if self.open_or_empty("data")? {
                        loop {
                            if matches!(self.peek()?, Tok::Close(n) if *n == "data") {
                                self.next()?;
                                break;
                            }
                            items.push(self.value(depth + 1)?);
                        }
                    }
                    self.close("array")?;
                    Value::Array(items)
                }
                "struct" => {
                    let mut m = BTreeMap::new();
                    loop {
                        match self.next()? {
                            (_, Tok::Close(n)) if n == "struct" => break,
                            (at, Tok::Open(n)) if n == "member" => {
                                let name =
                                    if self.open_or_empty("name")? { self.text_until("name")? } else { String::new() };
                                let v = self.value(depth + 1)?;
                                self.close("member")?;
                                match m.entry(name) {
                                    std::collections::btree_map::Entry::Vacant(e) => {
                                        e.insert(v);
                                    }
                                    std::collections::btree_map::Entry::Occupied(e) => {
                                        let copies = format!("first {}, then {}", e.get().preview(), v.preview());
                                        return Err(CodecError::DuplicateMember {
                                            name: e.key().clone(),
                                            copies: copies.into(),
                                            offset: at,
                                        });
                                    }
                                }
                            }
                            (at, t) => return Err(Self::unexpected(at, "<member> or </struct>", &t)),
                        }
                    }
                    Value::Struct(m)
                }
                _ => return Err(Self::unexpected(tat, "a typed value", &Tok::Open(n))),
            },
            t => return Err(Self::unexpected(tat, "a value", &t)),
        };
        self.close("value")?;
        Ok(v)
    }

    fn end(&mut self) -> Result<()> {
        match self.next()? {
            (_, Tok::Eof) => Ok(()),
            (at, t) => Err(Self::unexpected(at, "end of document", &t)),
        }
    }
}

/// Decodes a `methodResponse` body into xapi's status envelope.
pub fn decode_response(bytes: &[u8]) -> Result<Response> {
    let mut p = Parser::new(bytes)?;
    p.open("methodResponse")?;
    let r = match p.next()? {
        (_, Tok::Open(n)) if n == "params" => {
            p.open("param")?;
            let v = p.value(0)?;
            p.close("param")?;
            p.close("params")?;
            envelope(v)?
        }
        (_, Tok::Open(n)) if n == "fault" => {
            let v = p.value(0)?;
            p.close("fault")?;
            let code = v.get("faultCode").and_then(Value::as_int).unwrap_or(0);
            let message = v.get("faultString").and_then(Value::as_str).unwrap_or_default().to_string();
            Response::Fault { code, message }
        }
        (at, t) => return Err(Parser::unexpected(at, "<params> or <fault>", &t)),
    };
    p.close("methodResponse")?;
    p.end()?;
    Ok(r)
}

/// Reads xapi's `{Status, Value | ErrorDescription}` struct.
pub fn envelope(v: Value) -> Result<Response> {
    let Value::Struct(mut m) = v else {
        return Err(CodecError::Envelope(format!("result is a {}, expected the Status struct", v.kind())));
    };
    match m.get("Status").and_then(Value::as_str) {
        Some("Success") => {
            m.remove("Value").map(Response::Success).ok_or_else(|| CodecError::Envelope("Success without Value".into()))
        }
        Some("Failure") => {
            let desc = m
                .get("ErrorDescription")
                .and_then(Value::as_array)
                .ok_or_else(|| CodecError::Envelope("Failure without an ErrorDescription array".into()))?;
            Ok(Response::Failure(
                desc.iter()
                    .map(|v| match v {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
            ))
        }
        Some(other) => Err(CodecError::Envelope(format!("unknown Status `{other}`"))),
        None => Err(CodecError::Envelope("no Status member".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(xml: &str) -> Value {
        match decode_response(xml.as_bytes()).unwrap() {
            Response::Success(v) => v,
            other => panic!("not success: {other:?}"),
        }
    }

    fn wrap(inner: &str) -> String {
        format!(
            "<?xml version='1.0'?><methodResponse><params><param><value><struct>\
             <member><name>Status</name><value>Success</value></member>\
             <member><name>Value</name>{inner}</member></struct></value></param></params></methodResponse>"
        )
    }

    #[test]
    fn bare_typed_and_empty_strings_are_all_strings() {
        assert_eq!(ok(&wrap("<value>abc</value>")), Value::str("abc"));
        assert_eq!(ok(&wrap("<value><string>abc</string></value>")), Value::str("abc"));
        assert_eq!(ok(&wrap("<value/>")), Value::str(""));
        assert_eq!(ok(&wrap("<value></value>")), Value::str(""));
        assert_eq!(ok(&wrap("<value><string/></value>")), Value::str(""));
        assert_eq!(ok(&wrap("<value>  spaced  </value>")), Value::str("  spaced  "));
        assert_eq!(ok(&wrap("<value>a &amp; b &lt;c&gt;</value>")), Value::str("a & b <c>"));
    }

    #[test]
    fn ints_as_strings_and_booleans_read_through_accessors() {
        assert_eq!(ok(&wrap("<value>-1</value>")).as_int(), Some(-1));
        assert_eq!(ok(&wrap("<value><int>42</int></value>")).as_int(), Some(42));
        assert_eq!(ok(&wrap("<value><boolean>1</boolean></value>")), Value::Bool(true));
        assert!(decode_response(wrap("<value><boolean>yes</boolean></value>").as_bytes()).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 10_000;
        let inner =
            format!("{}<value/>{}", "<value><array><data>".repeat(depth), "</data></array></value>".repeat(depth));
        let e = decode_response(wrap(&inner).as_bytes()).unwrap_err();
        assert!(matches!(e, CodecError::TooDeep { .. }), "{e}");
    }

    #[test]
    fn a_duplicate_struct_member_is_an_error_naming_both_copies() {
        let xml = wrap(
            "<value><struct><member><name>tag</name><value>100</value></member>\
             <member><name>tag</name><value>200</value></member></struct></value>",
        );
        let e = decode_response(xml.as_bytes()).unwrap_err();
        let CodecError::DuplicateMember { name, offset, .. } = &e else { panic!("{e}") };
        assert_eq!(name, "tag");
        assert!(xml[*offset..].starts_with("<member><name>tag</name><value>200"), "{e}");
        let text = e.to_string();
        assert!(text.contains("`tag` appears twice") && text.contains("`100`") && text.contains("`200`"), "{text}");
    }

    #[test]
    fn garbage_never_panics() {
        for s in ["", "<", "<methodResponse>", "<methodResponse><params><param><value><struct><member>", "\u{0}\u{1}"] {
            assert!(decode_response(s.as_bytes()).is_err());
        }
        assert!(matches!(decode_response(&[0xff, 0xfe]), Err(CodecError::Utf8 { .. })));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_response(&bytes);
        }
    }
}
