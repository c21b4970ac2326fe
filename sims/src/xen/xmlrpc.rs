//! The pool simulator's own XML-RPC (the 1999 spec, as xapi speaks it): a `methodCall` read
//! into [`Call`], a [`Reply`] written as xapi writes it — the status envelope
//! `{Status: "Success", Value: …}` or `{Status: "Failure", ErrorDescription: [code, params…]}`,
//! and the plain `<fault>` xapi sends only for requests it cannot parse. Strings go out
//! untyped (`<value>text</value>`), as xapi sends them, and 64-bit integers as decimal strings
//! where xapi's data model says `int` (the pool stores them so).
//!
//! Independent of netfold's client codec by design (see the crate docs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::escape::escape;

use crate::xml::{self, Element};

/// An XML-RPC value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    DateTime(String),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`: Python's `xmlrpc.client` sends it with `allow_none`.
    Nil,
}

impl Value {
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A member of a struct value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.get(name),
            _ => None,
        }
    }

    /// An `<int>`, or a decimal string (how xapi's clients pass 64-bit ints).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// What the pool answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Success(Value),
    /// xapi's `ErrorDescription`: the error code, then its parameters.
    Failure(Vec<String>),
    Fault {
        code: i64,
        message: String,
    },
}

/// Reads a `methodCall`.
pub fn decode_call(bytes: &[u8]) -> Result<Call, String> {
    let root = xml::parse(bytes)?;
    if root.name != "methodCall" {
        return Err(format!("the root element is <{}>, not <methodCall>", root.name));
    }
    let method = root.text_of("methodName").ok_or("<methodCall> has no <methodName>")?.trim().to_string();
    let mut params = Vec::new();
    if let Some(ps) = root.child("params") {
        for (i, p) in ps.children.iter().enumerate() {
            if p.name != "param" {
                return Err(format!("<params> holds <{}> at position {i}, not <param>", p.name));
            }
            let v = p.child("value").ok_or_else(|| format!("<param> {i} has no <value>"))?;
            params.push(value(v).map_err(|e| format!("param {i}: {e}"))?);
        }
    }
    Ok(Call { method, params })
}

fn value(v: &Element) -> Result<Value, String> {
    let Some(typed) = v.children.first() else {
        return Ok(Value::Str(v.text.clone())); // untyped: a string
    };
    let text = typed.text.trim();
    let bad = |kind: &str| format!("bad <{kind}> `{text}`");
    Ok(match typed.name.as_str() {
        "string" => Value::Str(typed.text.clone()),
        "int" | "i4" | "i8" => Value::Int(text.parse().map_err(|_| bad(&typed.name))?),
        "boolean" => match text {
            "1" => Value::Bool(true),
            "0" => Value::Bool(false),
            _ => return Err(bad("boolean")),
        },
        "double" => Value::Double(text.parse().map_err(|_| bad("double"))?),
        "dateTime.iso8601" => Value::DateTime(text.to_string()),
        "nil" => Value::Nil,
        "array" => {
            let data = typed.child("data").ok_or("<array> has no <data>")?;
            Value::Array(data.all("value").map(value).collect::<Result<_, _>>()?)
        }
        "struct" => {
            let mut m = BTreeMap::new();
            for member in typed.all("member") {
                let name = member.text_of("name").ok_or("a <member> has no <name>")?.to_string();
                let v = member.child("value").ok_or_else(|| format!("member `{name}` has no <value>"))?;
                let v = value(v).map_err(|e| format!("member `{name}`: {e}"))?;
                if m.insert(name.clone(), v).is_some() {
                    return Err(format!("member `{name}` appears twice in one struct"));
                }
            }
            Value::Struct(m)
        }
        other => return Err(format!("<{other}> is no XML-RPC type")),
    })
}

/// Writes a `methodResponse`.
pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodResponse>");
    let envelope = |status: &str, key: &str, v: Value| {
        let mut m = BTreeMap::new();
        m.insert("Status".to_string(), Value::str(status));
        m.insert(key.to_string(), v);
        Value::Struct(m)
    };
    match r {
        Response::Success(v) => {
            out.push_str("<params><param>");
            write(&mut out, &envelope("Success", "Value", v.clone()));
            out.push_str("</param></params>");
        }
        Response::Failure(desc) => {
            let desc = Value::Array(desc.iter().cloned().map(Value::Str).collect());
            out.push_str("<params><param>");
            write(&mut out, &envelope("Failure", "ErrorDescription", desc));
            out.push_str("</param></params>");
        }
        Response::Fault { code, message } => {
            let mut m = BTreeMap::new();
            m.insert("faultCode".to_string(), Value::Int(*code));
            m.insert("faultString".to_string(), Value::str(message.clone()));
            out.push_str("<fault>");
            write(&mut out, &Value::Struct(m));
            out.push_str("</fault>");
        }
    }
    out.push_str("</methodResponse>\n");
    out.into_bytes()
}

fn write(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) if s.is_empty() => out.push_str("<value/>"),
        Value::Str(s) => {
            let _ = write!(out, "<value>{}</value>", escape(s.as_str()));
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
            let _ = write!(out, "<value><dateTime.iso8601>{}</dateTime.iso8601></value>", escape(s.as_str()));
        }
        Value::Nil => out.push_str("<value><nil/></value>"),
        Value::Array(a) => {
            out.push_str("<value><array><data>");
            for v in a {
                write(out, v);
            }
            out.push_str("</data></array></value>");
        }
        Value::Struct(m) => {
            out.push_str("<value><struct>");
            for (k, v) in m {
                let _ = write!(out, "<member><name>{}</name>", escape(k.as_str()));
                write(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct></value>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_as_xenapi_py_sends_it() {
        let body = br#"<?xml version='1.0'?>
<methodCall><methodName>event.from</methodName><params>
<param><value><string>OpaqueRef:s&amp;1</string></value></param>
<param><value><array><data><value><string>vm</string></value><value>host</value></data></array></value></param>
<param><value><string></string></value></param>
<param><value><double>30.0</double></value></param>
<param><value><struct><member><name>k</name><value><int>7</int></value></member></struct></value></param>
</params></methodCall>"#;
        let c = decode_call(body).unwrap();
        assert_eq!(c.method, "event.from");
        assert_eq!(
            c.params,
            vec![
                Value::str("OpaqueRef:s&1"),
                Value::Array(vec![Value::str("vm"), Value::str("host")]),
                Value::str(""),
                Value::Double(30.0),
                Value::Struct([("k".to_string(), Value::Int(7))].into()),
            ]
        );
    }

    #[test]
    fn bad_calls_are_refused_with_what_and_where() {
        for (body, says) in [
            (&b"<methodResponse/>"[..], "not <methodCall>"),
            (b"<methodCall><params/></methodCall>", "no <methodName>"),
            (b"<methodCall><methodName>m</methodName><params><param><value><int>x</int></value></param></params></methodCall>", "param 0: bad <int>"),
            (b"<methodCall><methodName>m</methodName><params><param><value><struct><member><name>a</name><value>1</value></member><member><name>a</name><value>2</value></member></struct></value></param></params></methodCall>", "appears twice"),
        ] {
            let e = decode_call(body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn replies_carry_xapis_status_envelope() {
        let ok = String::from_utf8(encode_response(&Response::Success(Value::str("a<b")))).unwrap();
        assert!(ok.contains("<member><name>Status</name><value>Success</value></member><member><name>Value</name><value>a&lt;b</value></member>"), "{ok}");
        let failed =
            String::from_utf8(encode_response(&Response::Failure(vec!["HANDLE_INVALID".into(), "VM".into()]))).unwrap();
        assert!(failed.contains("<name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value><value>VM</value></data></array></value>"), "{failed}");
    }
}
