//! Golden tests for what both client-side XML decoders make of text: predefined entities
//! (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;`), decimal and hex character references (`&#66;`,
//! `&#x41;`, one beyond the BMP), CDATA sections (empty, mixed with text, holding `&amp;` and
//! `<b>` verbatim) and CRLF line ends in text, as a vCenter on Windows or a proxy may send them.
//!
//! They pin today's decoding (quick-xml 0.37) byte for byte, so a quick-xml upgrade that
//! changes any of it — from 0.38 entity references arrive as events of their own, and a plain
//! bump would drop them — fails here instead of changing names and keys silently. The samples
//! are `tests/golden/{vsphere,xen}/*entities_cdata_crlf.xml`, stored with CRLF line ends.

use std::path::PathBuf;

use adapters::vsphere::codec::{decode_retrieve, Value as VimValue};
use adapters::xen::codec::{decode_response, Response, Value};

fn golden(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(path);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        bytes.windows(2).any(|w| w == b"\r\n"),
        "{} lost its CRLF line ends (a checkout converted it)",
        p.display()
    );
    bytes
}

/// The text the samples carry, decoded.
const NAME: &str = "web & db <prod> \"A\" 'AB\u{1F600}'";
/// CRLF inside text is kept as sent (quick-xml 0.37 does not normalise line ends), CDATA is
/// verbatim, `&#13;&#10;` is CR LF.
const NOTE: &str = "line one\r\nline two\r\nraw <b> & &amp; tail &\r\nend";
const MIXED: &str = "only cdata";

#[test]
fn vsphere_text_entities_cdata_and_crlf_decode_as_pinned() {
    let r = decode_retrieve(&golden("vsphere/retrieve_entities_cdata_crlf.xml"), "RetrievePropertiesEx").unwrap();
    let [o] = &r.objects[..] else { panic!("one object: {r:?}") };
    assert_eq!(
        (o.obj.kind.as_str(), o.obj.value.as_str()),
        ("VirtualMachine", "vm-42"),
        "attribute and text references"
    );
    let prop = |name: &str| match o.props.iter().find(|(n, _)| n == name) {
        Some((_, VimValue::Str(s))) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(prop("name"), NAME);
    assert_eq!(prop("config.annotation"), NOTE);
    assert_eq!(prop("summary.config.name"), MIXED);
}

#[test]
fn xen_text_entities_cdata_and_crlf_decode_as_pinned() {
    let Response::Success(Value::Struct(record)) = decode_response(&golden("xen/entities_cdata_crlf.xml")).unwrap()
    else {
        panic!("a struct")
    };
    assert_eq!(record.get("name_label"), Some(&Value::str(NAME)));
    assert_eq!(record.get("name_description"), Some(&Value::str(NOTE)));
    assert_eq!(record.get("other_&_key"), Some(&Value::str(MIXED)), "member names are unescaped too");
    assert_eq!(record.len(), 3);
}
