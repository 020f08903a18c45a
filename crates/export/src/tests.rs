use std::io::Read as _;

use serde_json::{Map, Value, json};
use userexport_domain::{ExportFormat, ExportSpec, JsonPointer, User, UserView, fake};

use super::*;

fn ptr(s: &str) -> JsonPointer {
    JsonPointer::parse(s).unwrap()
}

/// A fake user whose custom attributes are exactly `attrs` (an object).
fn user_with(attrs: Value) -> User {
    let mut u = fake::user(7, 0);
    u.custom_attributes = match attrs {
        Value::Object(m) => m,
        other => panic!("attrs must be an object, got {other}"),
    };
    u
}

fn encode(spec: &ExportSpec, users: &[User]) -> Vec<u8> {
    let mut enc = ExportEncoder::new(spec);
    for u in users {
        enc.push(u).unwrap();
    }
    assert_eq!(enc.rows(), users.len() as u64);
    enc.finish().unwrap()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// The CSV cell rendered for custom attribute `v` (header and the trailing sentinel column removed).
fn cell(value: Value, guard: bool, quote_all: bool) -> String {
    let spec = ExportSpec::builder(ExportFormat::Csv)
        .field(ptr("/custom_attributes/v"), Some("v".into()))
        .field(ptr("/custom_attributes/z"), Some("z".into()))
        .formula_guard(guard)
        .quote_all(quote_all)
        .build()
        .unwrap();
    let out = text(encode(&spec, &[user_with(json!({"v": value, "z": 1}))]));
    let header = if quote_all { "\"v\",\"z\"\n" } else { "v,z\n" };
    let row = out.strip_prefix(header).unwrap_or_else(|| panic!("unexpected header in {out:?}"));
    row.strip_suffix(",1\n").unwrap_or_else(|| panic!("unexpected row {row:?}")).to_owned()
}

/// The cell of a pointer that does not resolve.
fn missing_cell() -> String {
    let spec = ExportSpec::builder(ExportFormat::Csv)
        .field(ptr("/custom_attributes/absent"), None)
        .field(ptr("/custom_attributes/z"), None)
        .build()
        .unwrap();
    let out = text(encode(&spec, &[user_with(json!({"z": 1}))]));
    out.lines().nth(1).unwrap().to_owned()
}

#[test]
fn csv_quotes_only_what_needs_quoting() {
    let cases: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ("\"", "\"\"\"\""),
        ("a\rb", "\"a\rb\""),
        ("a\nb", "\"a\nb\""),
        ("a\r\nb", "\"a\r\nb\""),
        (" lead", "\" lead\""),
        ("\tlead", "\"\tlead\""),
        ("\u{a0}nbsp", "\"\u{a0}nbsp\""),
        ("\u{3000}ideographic", "\"\u{3000}ideographic\""),
        ("trail ", "trail "),
        ("in side", "in side"),
        ("Zoë 美咲 محمد", "Zoë 美咲 محمد"),
        ("semi;colon", "semi;colon"),
        ("it's", "it's"),
        ("\\.", "\"\\.\""),
        ("", ""),
    ];
    for (value, expected) in cases {
        assert_eq!(cell(json!(value), false, false), *expected, "value {value:?}");
    }
    // Missing keys and null render as empty cells, like the empty string.
    assert_eq!(missing_cell(), ",1");
    assert_eq!(cell(Value::Null, false, false), "");
}

#[test]
fn a_lone_empty_field_is_quoted_so_the_record_is_not_blank() {
    let spec = ExportSpec::builder(ExportFormat::Csv).field(ptr("/custom_attributes/none"), None).build().unwrap();
    let out = encode(&spec, &[user_with(json!({})), user_with(json!({}))]);
    assert_eq!(text(out.clone()), "custom_attributes.none\n\"\"\n\"\"\n");
    let mut reader = csv::ReaderBuilder::new().from_reader(out.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][0], "");
    // An empty header is quoted for the same reason.
    let spec = ExportSpec::builder(ExportFormat::Csv).field(ptr(""), None).build().unwrap();
    let out = text(encode(&spec, &[]));
    assert_eq!(out, "\"\"\n");
}

#[test]
fn formula_guard_prefixes_every_trigger() {
    let cases: &[(&str, &str, &str)] = &[
        // (value, guard on, guard off)
        ("=1+2", "'=1+2", "=1+2"),
        ("+Plus", "'+Plus", "+Plus"),
        ("-Minus", "'-Minus", "-Minus"),
        ("@SUM(A1)", "'@SUM(A1)", "@SUM(A1)"),
        ("\tTab", "'\tTab", "\"\tTab\""),
        ("\rCR", "\"'\rCR\"", "\"\rCR\""),
        ("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\"", "\"=HYPERLINK(\"\"http://x\"\")\""),
        ("=a,b", "\"'=a,b\"", "\"=a,b\""),
        // A string that looks like a negative number is still a string.
        ("-5", "'-5", "-5"),
        // Only `+` followed by digits only is a phone number.
        ("+15551234567", "+15551234567", "+15551234567"),
        ("+1 555 123", "'+1 555 123", "+1 555 123"),
        ("+1-555", "'+1-555", "+1-555"),
        ("+", "'+", "+"),
        ("a=b", "a=b", "a=b"),
        (" =x", "\" =x\"", "\" =x\""),
    ];
    for (value, on, off) in cases {
        assert_eq!(cell(json!(value), true, false), *on, "guard on, value {value:?}");
        assert_eq!(cell(json!(value), false, false), *off, "guard off, value {value:?}");
    }
    // Numbers and booleans are never prefixed.
    for guard in [true, false] {
        assert_eq!(cell(json!(-5), guard, false), "-5");
        assert_eq!(cell(json!(-1.5), guard, false), "-1.5");
        assert_eq!(cell(json!(false), guard, false), "false");
    }
}

#[test]
fn formula_guard_applies_to_headers() {
    let spec = ExportSpec::builder(ExportFormat::Csv)
        .field(ptr("/sub"), Some("=cmd".into()))
        .field(ptr("/email"), Some("a,b".into()))
        .build()
        .unwrap();
    assert_eq!(text(encode(&spec, &[])), "'=cmd,\"a,b\"\n");
    let unguarded = ExportSpec::builder(ExportFormat::Csv)
        .field(ptr("/sub"), Some("=cmd".into()))
        .formula_guard(false)
        .build()
        .unwrap();
    assert_eq!(text(encode(&unguarded, &[])), "=cmd\n");
}

#[test]
fn headers_use_explicit_names_else_unescaped_tokens() {
    let spec = ExportSpec::builder(ExportFormat::Csv)
        .field(ptr("/address/formatted"), None)
        .field(ptr("/a~1b"), None)
        .field(ptr("/x~0y"), None)
        .field(ptr("/sub"), Some("User ID".into()))
        .field(ptr("/roles/0"), None)
        .build()
        .unwrap();
    assert_eq!(text(encode(&spec, &[])), "address.formatted,a/b,x~y,User ID,roles.0\n");
    let auth0 = ExportSpec::builder(ExportFormat::Csv).view(UserView::Auth0).build().unwrap();
    let out = text(encode(&auth0, &[]));
    assert!(out.starts_with("user_id,email,email_verified,"), "{out}");
    assert!(out.ends_with(",identities[0].connection\n"), "{out}");
}

#[test]
fn numbers_render_in_decimal_without_exponent() {
    let huge = format!("15{}", "0".repeat(299));
    let cases: &[(Value, &str)] = &[
        (json!(u64::MAX), "18446744073709551615"),
        (json!(i64::MIN), "-9223372036854775808"),
        (json!(9_007_199_254_740_993_i64), "9007199254740993"),
        (json!(0), "0"),
        (json!(1e21), "1000000000000000000000"),
        (json!(1.5e300), &huge),
        (json!(1e-7), "0.0000001"),
        (json!(1.5), "1.5"),
        (json!(5.0), "5"),
        (json!(-0.25), "-0.25"),
        (json!(0.1), "0.1"),
    ];
    for (value, expected) in cases {
        assert_eq!(cell(value.clone(), true, false), *expected, "value {value}");
        assert_eq!(render_cell(Some(value)), *expected);
    }
}

#[test]
fn arrays_and_objects_are_compact_html_escaped_json() {
    assert_eq!(cell(json!(["role_a", "role_b"]), true, false), r#""[""role_a"",""role_b""]""#);
    assert_eq!(cell(json!([1, 2]), true, false), "\"[1,2]\"");
    assert_eq!(cell(json!([1]), true, false), "[1]");
    assert_eq!(cell(json!([]), true, false), "[]");
    assert_eq!(cell(json!({}), true, false), "{}");
    assert_eq!(
        cell(json!({"k": "<b>&</b>", "n": 1}), true, false),
        r#""{""k"":""\u003cb\u003e\u0026\u003c/b\u003e"",""n"":1}""#
    );
    let v = json!({"z": ["\u{2028}", "\u{2029}", "a\"b"], "a": null});
    assert_eq!(render_cell(Some(&v)), r#"{"z":["\u2028","\u2029","a\"b"],"a":null}"#);
    assert!(matches!(render_cell(Some(&json!("s"))), Cow::Borrowed("s")));
    assert_eq!(render_cell(Some(&json!(true))), "true");
    assert_eq!(render_cell(Some(&Value::Null)), "");
    assert_eq!(render_cell(None), "");
}

/// JSON cells are written in one pass (quotes doubled by the formatter, quoting decided from the
/// structure); they must equal the two-pass reference: render the compact HTML-escaped JSON, then
/// quote it by Go's rules (quote-all: always).
#[test]
fn json_cells_match_the_render_then_quote_reference() {
    let values = [
        json!([]),
        json!({}),
        json!([1]),
        json!([true]),
        json!([null]),
        json!([1.5, -2]),
        json!([[]]),
        json!([[], {}]),
        json!([""]),
        json!({"": ""}),
        json!(["a,b"]),
        json!(["say \"hi\"", "\\\"", "\"\""]),
        json!({"k\"ey": ["<&>", "\u{2028}\u{2029}", "\n\r\t\u{1}\u{7f}", "é\u{1F600}"]}),
        json!({"nested": {"deeper": [{"x": 1}, {"y": [2, 3]}]}}),
        json!([{"a": null}]),
    ];
    for v in values {
        for quote_all in [false, true] {
            let rendered = render_cell(Some(&v));
            let quote = quote_all || rendered.contains([',', '"']);
            let want = if quote { format!("\"{}\"", rendered.replace('"', "\"\"")) } else { rendered.into_owned() };
            assert_eq!(cell(v.clone(), true, quote_all), want, "{v} quote_all={quote_all}");
        }
    }
}

/// The word-at-a-time scan agrees with the byte-by-byte definition at every position and length.
#[test]
fn has_special_finds_each_special_byte_anywhere() {
    let naive = |b: &[u8]| b.iter().any(|&c| matches!(c, b',' | b'"' | b'\r' | b'\n'));
    for len in 0..20 {
        let plain: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        assert!(!has_special(&plain));
        for pos in 0..len {
            // Specials, bytes next to them in value, and bytes with the high bit set.
            for b in [b',', b'"', b'\r', b'\n', b'+', b'-', b'#', b'!', b'\x0b', b'\x0c', 0x80, 0xAC, 0xA2, 0xFF, 0] {
                let mut bytes = plain.clone();
                bytes[pos] = b;
                assert_eq!(has_special(&bytes), naive(&bytes), "{bytes:?}");
            }
        }
    }
}

#[test]
fn quote_all_quotes_every_non_empty_text_cell() {
    assert_eq!(cell(json!("abc"), true, true), "\"abc\"");
    assert_eq!(cell(json!("a\"b"), true, true), "\"a\"\"b\"");
    assert_eq!(cell(json!("=x"), true, true), "\"'=x\"");
    assert_eq!(cell(json!("=x"), false, true), "\"=x\"");
    assert_eq!(cell(json!("+15551234567"), true, true), "\"+15551234567\"");
    assert_eq!(cell(json!(""), true, true), "");
    assert_eq!(cell(json!(5), true, true), "5");
    assert_eq!(cell(json!(true), true, true), "true");
    assert_eq!(cell(json!([1]), true, true), "\"[1]\"");
}

#[test]
fn ndjson_whole_record_per_line() {
    let mut u = fake::user(3, 4);
    u.name = Some("<b>Tom & Jerry</b>\u{2028}".into());
    let users = [u.clone(), fake::user(3, 5)];
    let spec = ExportSpec::builder(ExportFormat::Ndjson).build().unwrap();
    let out = text(encode(&spec, &users));
    let lines: Vec<&str> = out.split_terminator('\n').collect();
    assert_eq!(lines.len(), 2);
    assert!(out.ends_with('\n'));
    for (line, user) in lines.iter().zip(&users) {
        let parsed: Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed, user.authgear_record());
        // Key order is the view's.
        let expected = serde_json::to_string(&user.authgear_record()).unwrap();
        assert_eq!(
            line.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&").replace("\\u2028", "\u{2028}"),
            expected
        );
    }
    assert!(lines[0].contains(r#""name":"\u003cb\u003eTom \u0026 Jerry\u003c/b\u003e\u2028""#), "{}", lines[0]);
    assert!(!lines[0].contains(['<', '>', '&', '\u{2028}']));

    // Other views are not HTML-escaped.
    let auth0 = ExportSpec::builder(ExportFormat::Ndjson).view(UserView::Auth0).build().unwrap();
    let out = text(encode(&auth0, std::slice::from_ref(&u)));
    assert_eq!(out, format!("{}\n", serde_json::to_string(&u.auth0_user()).unwrap()));
    assert!(out.contains("<b>Tom & Jerry</b>"));
}

#[test]
fn ndjson_with_fields_keeps_field_order_and_skips_unresolved() {
    let u = user_with(json!({"plan": "pro", "gone": null}));
    let spec = ExportSpec::builder(ExportFormat::Ndjson)
        .field(ptr("/custom_attributes/plan"), None)
        .field(ptr("/sub"), Some("<id>".into()))
        .field(ptr("/missing"), None)
        .field(ptr("/custom_attributes/gone"), Some("gone".into()))
        .field(ptr("/custom_attributes"), None)
        .build()
        .unwrap();
    let out = text(encode(&spec, std::slice::from_ref(&u)));
    let expected = format!(
        "{{\"custom_attributes.plan\":\"pro\",\"\\u003cid\\u003e\":\"{}\",\"gone\":null,\"custom_attributes\":{{\"plan\":\"pro\",\"gone\":null}}}}\n",
        u.id
    );
    assert_eq!(out, expected);
    // Nothing resolves: an empty object.
    let spec = ExportSpec::builder(ExportFormat::Ndjson).field(ptr("/nope"), None).build().unwrap();
    assert_eq!(text(encode(&spec, &[u])), "{}\n");
}

#[test]
fn zero_users_give_zero_bytes_or_just_the_header() {
    let nd = ExportSpec::builder(ExportFormat::Ndjson).build().unwrap();
    assert!(encode(&nd, &[]).is_empty());
    let csv_spec = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
    let out = text(encode(&csv_spec, &[]));
    assert_eq!(out.matches('\n').count(), 1);
    assert!(out.starts_with("sub,preferred_username,email,phone_number,"));
    assert!(out.ends_with(",biometric_count,passkey_count\n"));
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn specs(gzip: bool) -> Vec<ExportSpec> {
    vec![
        ExportSpec::builder(ExportFormat::Csv).gzip(gzip).build().unwrap(),
        ExportSpec::builder(ExportFormat::Csv).view(UserView::Auth0).quote_all(true).gzip(gzip).build().unwrap(),
        ExportSpec::builder(ExportFormat::Ndjson).gzip(gzip).build().unwrap(),
        ExportSpec::builder(ExportFormat::Ndjson).view(UserView::Descope).gzip(gzip).build().unwrap(),
    ]
}

#[test]
fn gzip_round_trips_to_the_plain_output() {
    let users: Vec<User> = (0..300).map(|i| fake::user(5, i)).collect();
    for (plain, gz) in specs(false).iter().zip(specs(true)) {
        let expected = encode(plain, &users);
        let compressed = encode(&gz, &users);
        assert_eq!(&compressed[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(compressed.len() < expected.len());
        assert_eq!(gunzip(&compressed), expected);
        // Zero rows still make a valid gzip file.
        assert_eq!(gunzip(&encode(&gz, &[])), encode(plain, &[]));
    }
    // The level is configurable; all levels decode to the same bytes.
    let spec = ExportSpec::builder(ExportFormat::Csv).gzip(true).build().unwrap();
    let plain = encode(&ExportSpec::builder(ExportFormat::Csv).build().unwrap(), &users);
    for level in [0, 1, 9, 42] {
        let mut enc = ExportEncoder::with_gzip_level(&spec, level);
        for u in &users {
            enc.push(u).unwrap();
        }
        assert_eq!(gunzip(&enc.finish().unwrap()), plain, "level {level}");
    }
}

#[test]
fn taken_chunks_concatenate_to_the_one_shot_output() {
    // Enough data that the deflate stream emits blocks before `finish`.
    let users: Vec<User> = (0..2000).map(|i| fake::user(9, i)).collect();
    for spec in specs(false).into_iter().chain(specs(true)) {
        let one_shot = encode(&spec, &users);
        let mut enc = ExportEncoder::new(&spec);
        let mut joined = enc.take();
        let mut chunks = usize::from(!joined.is_empty());
        for (i, u) in users.iter().enumerate() {
            enc.push(u).unwrap();
            if i % 97 == 0 {
                let ready = enc.buffered_len();
                let chunk = enc.take();
                assert_eq!(chunk.len(), ready);
                assert_eq!(enc.buffered_len(), 0);
                chunks += usize::from(!chunk.is_empty());
                joined.extend_from_slice(&chunk);
            }
        }
        assert_eq!(enc.rows(), 2000);
        joined.extend_from_slice(&enc.finish().unwrap());
        assert!(chunks > 1, "{spec:?} produced {chunks} chunk(s)");
        assert_eq!(joined, one_shot, "{spec:?}");
    }
}

/// The expected cell, computed without the encoder's code: serde_json's own pointer lookup and
/// straightforward rendering.
fn expected_cell(doc: &Value, pointer: &str, guard: bool) -> String {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => {
            let phone = s.len() > 1 && s.starts_with('+') && s[1..].chars().all(|c| c.is_ascii_digit());
            if guard && !phone && s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.clone() }
        }
        Some(v) => {
            serde_json::to_string(v).unwrap().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
        }
    }
}

#[test]
fn two_thousand_fake_users_round_trip_through_a_csv_reader() {
    let users: Vec<User> = (0..2000).map(|i| fake::user(1, i)).collect();
    let configs = [
        ExportSpec::builder(ExportFormat::Csv).build().unwrap(),
        ExportSpec::builder(ExportFormat::Csv).view(UserView::Auth0).quote_all(true).build().unwrap(),
        ExportSpec::builder(ExportFormat::Csv).view(UserView::Descope).formula_guard(false).build().unwrap(),
    ];
    for spec in configs {
        let out = encode(&spec, &users);
        assert!(out.ends_with(b"\n") && !out.ends_with(b"\r\n"));
        assert!(!out.starts_with(b"\xEF\xBB\xBF"), "no BOM");
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(out.as_slice());
        let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(header, spec.headers());
        let mut count = 0;
        let mut guarded = 0;
        for (record, user) in reader.records().zip(&users) {
            let record = record.unwrap();
            let doc = user.view(spec.view());
            assert_eq!(record.len(), spec.fields().len());
            for (got, field) in record.iter().zip(spec.fields()) {
                let expected = expected_cell(&doc, field.pointer().as_str(), spec.formula_guard());
                guarded += usize::from(expected.starts_with('\''));
                assert_eq!(got, expected, "user {} field {}", user.id, field.pointer());
            }
            count += 1;
        }
        assert_eq!(count, users.len());
        if spec.formula_guard() {
            assert!(guarded > 0, "the fake data contains formula-like values");
        }
    }
}

#[test]
fn encode_errors_are_export_failures() {
    let e = EncodeError::Compress(std::io::Error::other("boom"));
    assert_eq!(e.error_code(), Code::ExportFailed);
    assert_eq!(e.to_string(), "gzip compression failed: boom");
    let json_err = serde_json::from_str::<Value>("{").unwrap_err();
    assert_eq!(EncodeError::from(json_err).error_code(), Code::ExportFailed);
}

#[test]
fn object_cells_keep_key_order() {
    // Objects keep insertion order in cells (serde_json `preserve_order`).
    let mut m = Map::new();
    m.insert("z".into(), json!(1));
    m.insert("a".into(), json!(2));
    assert_eq!(render_cell(Some(&Value::Object(m))), r#"{"z":1,"a":2}"#);
}

#[test]
fn direct_authgear_rendering_matches_the_record() {
    let mut users: Vec<User> = (0..2000).map(|i| fake::user(3, i)).collect();
    users.push(user_with(json!({"v": "<a&b>\u{2028}", "n": -1.5, "o": {"x": [1, "=1"]}, "z": null})));
    let deep = [
        "/identities/0/login_id/value",
        "/mfa/totps/0/type",
        "/custom_attributes/o",
        "/custom_attributes/v",
        "/custom_attributes/n",
        "/custom_attributes/z",
        "/roles/1",
        "/address",
        "/mfa",
        "/nope",
        "",
    ];
    let mut specs = vec![
        ExportSpec::builder(ExportFormat::Csv).build().unwrap(),
        ExportSpec::builder(ExportFormat::Csv).quote_all(true).formula_guard(false).build().unwrap(),
        ExportSpec::builder(ExportFormat::Ndjson).build().unwrap(),
        ExportSpec::builder(ExportFormat::Ndjson).gzip(true).build().unwrap(),
    ];
    for format in [ExportFormat::Csv, ExportFormat::Ndjson] {
        let mut b = ExportSpec::builder(format);
        for (i, p) in deep.iter().enumerate() {
            b = b.field(ptr(p), Some(format!("f{i}")));
        }
        specs.push(b.build().unwrap());
        let one = ExportSpec::builder(format).field(ptr("/middle_name"), None).build().unwrap();
        specs.push(one);
    }
    for spec in &specs {
        let mut fast = ExportEncoder::new(spec);
        let mut slow = ExportEncoder::new(spec).via_documents();
        let mut projected = ExportEncoder::new(spec);
        let parts = projected.user_parts();
        for u in &users {
            fast.push(u).unwrap();
            slow.push(u).unwrap();
            let mut p = u.clone();
            parts.project(&mut p);
            projected.push(&p).unwrap();
        }
        let fast = fast.finish().unwrap();
        assert_eq!(fast, slow.finish().unwrap(), "{spec:?}");
        assert_eq!(fast, projected.finish().unwrap(), "{spec:?} reads outside {parts:?}");
    }
    let csv41 = ExportEncoder::new(&specs[0]).user_parts();
    assert!(!csv41.custom_attributes && !csv41.tenants && csv41.authenticators, "{csv41:?}");
    let auth0 = ExportSpec::builder(ExportFormat::Csv).view(UserView::Auth0).build().unwrap();
    assert_eq!(ExportEncoder::new(&auth0).user_parts(), userexport_domain::user::UserParts::ALL);
}

#[test]
fn reused_buffers_concatenate_to_the_one_shot_output() {
    let users: Vec<User> = (0..300).map(|i| fake::user(5, i)).collect();
    for gzip in [false, true] {
        let spec = ExportSpec::builder(ExportFormat::Csv).gzip(gzip).build().unwrap();
        let whole = encode(&spec, &users);
        let mut enc = ExportEncoder::new(&spec);
        let mut out = Vec::new();
        let mut spare = b"stale bytes".to_vec();
        for (i, u) in users.iter().enumerate() {
            enc.push(u).unwrap();
            if i % 37 == 0 {
                let part = enc.take_reusing(std::mem::take(&mut spare));
                out.extend_from_slice(&part);
                spare = part;
            }
        }
        out.extend(enc.finish().unwrap());
        assert_eq!(out, whole, "gzip {gzip}");
    }
}
