//! Compact JSON written straight into the output buffer.
//!
//! [`JsonOut`] is a [`serde::Serializer`] that produces exactly what `serde_json::to_vec` produces,
//! optionally with Go's HTML escaping (`<`, `>`, `&`, U+2028 and U+2029 as `\u003c`, `\u003e`,
//! `\u0026`, `\u2028`, `\u2029`, as `json.Marshal` writes them) and optionally with every `"`
//! doubled, as the inside of a quoted CSV field needs. It does in one pass over each string what
//! `serde_json`'s serializer, a formatter and a quote-doubling writer did in three, and it writes to
//! the `Vec` directly instead of through `io::Write`: serializing the Authgear `identities` cell was
//! half of the CSV encoder's instructions before. That cell, a column of CSV 41, has a writer of
//! its own ([`JsonOut::identities`]) that writes its keys and other constant parts as fragments
//! made at compile time, in both forms (plain, and with `"` doubled).

use serde::ser::{self, Error as _, Serialize};
use userexport_domain::User;
use userexport_domain::user::{IDENTITIES_NEWTYPE, ViewValue, login_id_type};

/// The error of [`JsonOut`]: `serde_json`'s, so that callers see one JSON error type.
type Error = serde_json::Error;

/// Byte classes of [`CLASS`]: bytes JSON escapes in strings (controls, `"`, `\`).
const JSON: u8 = 1;
/// Bytes Go's HTML escaping looks at in strings (`<`, `>`, `&`, the lead byte of U+2028/U+2029).
const HTML: u8 = 2;

/// The class of every byte: 0 for the bytes copied as they are.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = JSON;
        b += 1;
    }
    t[b'"' as usize] = JSON;
    t[b'\\' as usize] = JSON;
    t[b'<' as usize] = HTML;
    t[b'>' as usize] = HTML;
    t[b'&' as usize] = HTML;
    t[0xE2] = HTML;
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The index of the first byte of `bytes` whose class is in `mask`. Eight bytes at a time, their
/// classes or-ed without a branch per byte: most strings have nothing to escape, so the whole scan
/// is the common case (a byte-by-byte `position` was a sixth of the CSV encoder's instructions).
#[inline]
fn first_escaped(bytes: &[u8], mask: u8) -> Option<usize> {
    let class = |b: u8| CLASS[usize::from(b)];
    let mut chunks = bytes.chunks_exact(8);
    let mut start = 0;
    for c in &mut chunks {
        let any = class(c[0])
            | class(c[1])
            | class(c[2])
            | class(c[3])
            | class(c[4])
            | class(c[5])
            | class(c[6])
            | class(c[7]);
        if any & mask != 0 {
            return c.iter().position(|&b| class(b) & mask != 0).map(|i| start + i);
        }
        start += 8;
    }
    // The last 0–7 bytes (all of most keys and short values): or-ed too, and searched only on a hit.
    let rest = chunks.remainder();
    if rest.iter().fold(0, |any, &b| any | class(b)) & mask == 0 {
        return None;
    }
    rest.iter().position(|&b| class(b) & mask != 0).map(|i| start + i)
}

/// A constant piece of JSON, as it is written plainly and inside a quoted CSV field (every `"`
/// doubled), both made at compile time by [`fragment!`].
struct Fragment {
    plain: &'static [u8],
    doubled: &'static [u8],
}

/// Length of `text` with every `"` doubled.
const fn doubled_len(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut n, mut i) = (b.len(), 0);
    while i < b.len() {
        if b[i] == b'"' {
            n += 1;
        }
        i += 1;
    }
    n
}

/// `text` with every `"` doubled, into an array of [`doubled_len`] bytes.
const fn doubled<const N: usize>(text: &str) -> [u8; N] {
    let b = text.as_bytes();
    let mut out = [0u8; N];
    let (mut i, mut j) = (0, 0);
    while i < b.len() {
        out[j] = b[i];
        j += 1;
        if b[i] == b'"' {
            out[j] = b'"';
            j += 1;
        }
        i += 1;
    }
    out
}

/// A [`Fragment`] of a JSON text with nothing in it that JSON or HTML escaping would change.
macro_rules! fragment {
    ($text:expr) => {{
        const TEXT: &str = $text;
        const DOUBLED: [u8; doubled_len(TEXT)] = doubled(TEXT);
        Fragment { plain: TEXT.as_bytes(), doubled: &DOUBLED }
    }};
}

/// The constant parts of the Authgear `identities` array ([`JsonOut::identities`]).
mod identity {
    use super::{Fragment, doubled, doubled_len};

    pub(super) const LOGIN_ID: Fragment = fragment!(r#"{"type":"login_id","login_id":{"key":"#);
    pub(super) const TYPE: Fragment = fragment!(r#","type":"#);
    pub(super) const VALUE: Fragment = fragment!(r#","value":"#);
    pub(super) const ORIGINAL_VALUE: Fragment = fragment!(r#","original_value":"#);
    pub(super) const OAUTH: Fragment = fragment!(r#"{"type":"oauth","oauth":{"provider_alias":"#);
    pub(super) const PROVIDER_TYPE: Fragment = fragment!(r#","provider_type":"#);
    pub(super) const SUBJECT_ID: Fragment = fragment!(r#","provider_subject_id":"#);
    pub(super) const PROFILE: Fragment = fragment!(r#","user_profile":{}}}"#);
}

/// A serializer of compact JSON into `out` (see the [module docs](self)).
pub(crate) struct JsonOut<'a> {
    out: &'a mut Vec<u8>,
    /// The byte classes escaped in strings: [`JSON`], plus [`HTML`] when HTML-escaping.
    mask: u8,
    /// Every `"` is written twice.
    csv: bool,
    /// Whether a `"` or a `,` was written (either forces a CSV field to be quoted).
    special: bool,
    /// The user whose whole record is being written: its `identities` array (the newtype struct
    /// [`IDENTITIES_NEWTYPE`]) goes through [`identities`](Self::identities).
    record: Option<&'a User>,
}

impl<'a> JsonOut<'a> {
    /// A serializer appending to `out`, HTML-escaping if `html`, doubling quotes if `csv`.
    pub(crate) fn new(out: &'a mut Vec<u8>, html: bool, csv: bool) -> Self {
        Self { out, mask: if html { JSON | HTML } else { JSON }, csv, special: false, record: None }
    }

    /// Whether the JSON written so far holds a `"` or a `,`.
    pub(crate) fn special(&self) -> bool {
        self.special
    }

    fn quote(&mut self) {
        self.special = true;
        if self.csv {
            self.out.extend_from_slice(b"\"\"");
        } else {
            self.out.push(b'"');
        }
    }

    fn comma(&mut self) {
        self.special = true;
        self.out.push(b',');
    }

    /// A JSON string, escaped as `serde_json` (and Go's HTML escaping, if asked) escape it.
    fn string(&mut self, s: &str) {
        self.quote();
        self.contents(s);
        self.quote();
    }

    /// The escaped contents of a string, between its quotes. Kept small enough to inline: the
    /// escaping loop is out of line, as most strings have nothing to escape.
    #[inline]
    fn contents(&mut self, s: &str) {
        let bytes = s.as_bytes();
        match first_escaped(bytes, self.mask) {
            None => self.out.extend_from_slice(bytes),
            Some(at) => self.escape(bytes, at),
        }
    }

    /// [`contents`](Self::contents) of `bytes`, whose first byte to escape is at `at`.
    #[inline(never)]
    fn escape(&mut self, bytes: &[u8], at: usize) {
        let mask = self.mask;
        self.out.reserve(bytes.len() + 2);
        let mut rest = bytes;
        let mut next = Some(at);
        while let Some(at) = next {
            let (plain, tail) = rest.split_at(at);
            self.out.extend_from_slice(plain);
            let mut unicode = *b"\\u0000";
            let (escaped, len): (&[u8], usize) = match tail {
                [b'"', ..] if self.csv => (b"\\\"\"", 1),
                [b'"', ..] => (b"\\\"", 1),
                [b'\\', ..] => (b"\\\\", 1),
                [b'\n', ..] => (b"\\n", 1),
                [b'\r', ..] => (b"\\r", 1),
                [b'\t', ..] => (b"\\t", 1),
                [0x08, ..] => (b"\\b", 1),
                [0x0C, ..] => (b"\\f", 1),
                [b @ 0x00..=0x1F, ..] => {
                    unicode[4] = HEX[usize::from(b >> 4)];
                    unicode[5] = HEX[usize::from(b & 0xF)];
                    (&unicode, 1)
                }
                [b'<', ..] => (b"\\u003c", 1),
                [b'>', ..] => (b"\\u003e", 1),
                [b'&', ..] => (b"\\u0026", 1),
                [0xE2, 0x80, 0xA8, ..] => (b"\\u2028", 3),
                [0xE2, 0x80, 0xA9, ..] => (b"\\u2029", 3),
                // Another character starting with 0xE2: its lead byte is copied as it is.
                _ => (&tail[..1], 1),
            };
            self.out.extend_from_slice(escaped);
            rest = &tail[len..];
            next = first_escaped(rest, mask);
        }
        self.out.extend_from_slice(rest);
    }

    /// Serializes a value found at a pointer; the `identities` array, alone or in the whole record,
    /// by [`identities`](Self::identities).
    pub(crate) fn view_value(&mut self, v: &ViewValue<'a>) -> Result<(), Error> {
        match v {
            ViewValue::Identities(u) => {
                self.identities(u);
                Ok(())
            }
            ViewValue::Record(u) => {
                let outer = self.record.replace(u);
                let written = v.serialize(&mut *self);
                self.record = outer;
                written
            }
            v => v.serialize(self),
        }
    }

    /// A JSON string of a word with nothing to escape (`email`, `phone`, `username`).
    fn word(&mut self, w: &'static str) {
        debug_assert!(first_escaped(w.as_bytes(), self.mask).is_none(), "{w} needs escaping");
        self.quote();
        self.out.extend_from_slice(w.as_bytes());
        self.quote();
    }

    /// A constant piece of JSON (with a `"` or a `,` in it).
    fn fragment(&mut self, f: &Fragment) {
        self.special = true;
        self.out.extend_from_slice(if self.csv { f.doubled } else { f.plain });
    }

    /// The Authgear `identities` array of `u`: the bytes `ViewValue::Identities(u)` serializes to
    /// (the encoder's tests compare the two on every fake user), with the keys and the other
    /// constant parts written as they are instead of as a dozen escaped strings per identity,
    /// which was a third of the CSV encoder's instructions.
    pub(crate) fn identities(&mut self, u: &User) {
        self.out.push(b'[');
        let mut first = true;
        for v in &u.login_ids {
            if !std::mem::take(&mut first) {
                self.comma();
            }
            let ty = login_id_type(v);
            self.fragment(&identity::LOGIN_ID);
            self.word(ty);
            self.fragment(&identity::TYPE);
            self.word(ty);
            self.fragment(&identity::VALUE);
            self.string(v);
            self.fragment(&identity::ORIGINAL_VALUE);
            self.string(v);
            self.out.extend_from_slice(b"}}");
        }
        for p in &u.authenticators.oauth_providers {
            if !std::mem::take(&mut first) {
                self.comma();
            }
            self.fragment(&identity::OAUTH);
            self.string(p);
            self.fragment(&identity::PROVIDER_TYPE);
            self.string(p);
            self.fragment(&identity::SUBJECT_ID);
            // `<provider>-<user id>`, one string.
            self.quote();
            self.contents(p);
            self.out.push(b'-');
            self.contents(u.id.as_str());
            self.quote();
            self.fragment(&identity::PROFILE);
        }
        self.out.push(b']');
    }

    fn integer(&mut self, n: impl itoa::Integer) -> Result<(), Error> {
        self.out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        Ok(())
    }

    /// `{"variant":` of the externally tagged enum representation; closed by [`Compound`].
    fn variant_key(&mut self, variant: &str) {
        self.out.push(b'{');
        self.string(variant);
        self.out.push(b':');
    }

    fn compound(&mut self, open: u8, close: &'static [u8]) -> Compound<'_, 'a> {
        self.out.push(open);
        Compound { json: self, first: true, close }
    }
}

/// An array or object being written; `close` is what ends it (`]`, `}`, or `]}` / `}}` for enum
/// variants).
pub(crate) struct Compound<'j, 'a> {
    json: &'j mut JsonOut<'a>,
    first: bool,
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn separator(&mut self) {
        if !self.first {
            self.json.comma();
        }
        self.first = false;
    }

    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.separator();
        value.serialize(&mut *self.json)
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.separator();
        self.json.string(key);
        self.json.out.push(b':');
        value.serialize(&mut *self.json)
    }

    fn close(self) -> Result<(), Error> {
        self.json.out.extend_from_slice(self.close);
        Ok(())
    }
}

/// `serialize_i8` … `serialize_u128` of a serializer, each writing through its `integer` method.
macro_rules! integers {
    () => {
        integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128);
        integers!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);
    };
    ($($method:ident: $ty:ty),+) => {$(
        fn $method(self, v: $ty) -> Result<(), Error> {
            self.integer(v)
        }
    )+};
}

impl<'j, 'a> ser::Serializer for &'j mut JsonOut<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'j, 'a>;
    type SerializeTuple = Compound<'j, 'a>;
    type SerializeTupleStruct = Compound<'j, 'a>;
    type SerializeTupleVariant = Compound<'j, 'a>;
    type SerializeMap = Compound<'j, 'a>;
    type SerializeStruct = Compound<'j, 'a>;
    type SerializeStructVariant = Compound<'j, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!();

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        // Floats are rare (custom attributes): written by serde_json itself, whose float format
        // (shortest round trip, `null` when not finite) has changed between its releases.
        serde_json::to_writer(&mut *self.out, &v)
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.out, &v)
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.string(v);
        Ok(())
    }

    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Result<(), Error> {
        // Escaped piece by piece as the value formats itself (pieces are whole characters), instead
        // of into a String first.
        struct Contents<'j, 'a>(&'j mut JsonOut<'a>);
        impl std::fmt::Write for Contents<'_, '_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.contents(s);
                Ok(())
            }
        }
        self.quote();
        std::fmt::write(&mut Contents(&mut *self), format_args!("{value}")).map_err(Error::custom)?;
        self.quote();
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut seq = self.compound(b'[', b"]");
        for b in v {
            seq.element(b)?;
        }
        seq.close()
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<(), Error> {
        self.string(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, name: &'static str, value: &T) -> Result<(), Error> {
        match self.record {
            // Only the record of `user` is being written, so these are its identities.
            Some(user) if name == IDENTITIES_NEWTYPE => {
                self.identities(user);
                Ok(())
            }
            _ => value.serialize(self),
        }
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant_key(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'j, 'a>, Error> {
        Ok(self.compound(b'[', b"]"))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'j, 'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'j, 'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'j, 'a>, Error> {
        self.variant_key(variant);
        Ok(self.compound(b'[', b"]}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'j, 'a>, Error> {
        Ok(self.compound(b'{', b"}"))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'j, 'a>, Error> {
        Ok(self.compound(b'{', b"}"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'j, 'a>, Error> {
        self.variant_key(variant);
        Ok(self.compound(b'{', b"}}"))
    }
}

/// The `Serialize*` impls of arrays (and of the tuples and tuple variants written as arrays):
/// every element goes through [`Compound::element`].
macro_rules! array_like {
    ($($trait:ident :: $method:ident),+) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }

            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )+};
}

array_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        self.separator();
        key.serialize(MapKey(&mut *self.json))
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.json.out.push(b':');
        value.serialize(&mut *self.json)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// The `Serialize*` impls of structs and struct variants, written as objects.
macro_rules! object_like {
    ($($trait:ident),+) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;

            fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
                self.field(key, value)
            }

            fn end(self) -> Result<(), Error> {
                self.close()
            }
        }
    )+};
}

object_like!(SerializeStruct, SerializeStructVariant);

/// An object key: a string, or a number or boolean written as a string (as `serde_json` writes
/// them); anything else is an error.
struct MapKey<'j, 'a>(&'j mut JsonOut<'a>);

impl MapKey<'_, '_> {
    fn quoted(self, text: &str) -> Result<(), Error> {
        self.0.string(text);
        Ok(())
    }

    /// An integer key, quoted.
    fn integer(self, n: impl itoa::Integer) -> Result<(), Error> {
        self.quoted(itoa::Buffer::new().format(n))
    }

    /// A float key, in serde_json's float format.
    fn float(self, finite: bool, v: &impl Serialize) -> Result<(), Error> {
        if !finite {
            return Err(Error::custom("float key must be finite"));
        }
        self.quoted(&serde_json::to_string(v)?)
    }
}

fn key_must_be_a_string() -> Error {
    Error::custom("key must be a string")
}

impl ser::Serializer for MapKey<'_, '_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.quoted(v)
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.quoted(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.quoted(if v { "true" } else { "false" })
    }

    integers!();

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(v.is_finite(), &v)
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v.is_finite(), &v)
    }

    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<(), Error> {
        self.quoted(variant)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// What `serde_json` writes, HTML-escaped and quote-doubled as asked: the reference.
    fn reference(v: &impl Serialize, html: bool, csv: bool) -> Vec<u8> {
        let plain = serde_json::to_vec(v).expect("serde_json serializes it");
        let mut escaped = Vec::new();
        if html {
            escape_html(&plain, &mut escaped);
        } else {
            escaped = plain;
        }
        if csv {
            let mut doubled = Vec::new();
            crate::push_doubling_quotes(&mut doubled, &escaped);
            doubled
        } else {
            escaped
        }
    }

    /// Go's HTML escaping applied to serialized JSON, byte by byte: `<`, `>`, `&`, U+2028 and U+2029
    /// can only occur inside JSON strings, so the replacement is exact. The reference's second step,
    /// written independently of [`JsonOut::contents`].
    fn escape_html(src: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        let mut i = 0;
        while i < src.len() {
            let replacement: Option<(&[u8], usize)> = match src[i] {
                b'<' => Some((b"\\u003c", 1)),
                b'>' => Some((b"\\u003e", 1)),
                b'&' => Some((b"\\u0026", 1)),
                0xE2 if src.get(i + 1) == Some(&0x80) && src.get(i + 2) == Some(&0xA8) => Some((b"\\u2028", 3)),
                0xE2 if src.get(i + 1) == Some(&0x80) && src.get(i + 2) == Some(&0xA9) => Some((b"\\u2029", 3)),
                _ => None,
            };
            match replacement {
                Some((rep, len)) => {
                    out.extend_from_slice(&src[start..i]);
                    out.extend_from_slice(rep);
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        out.extend_from_slice(&src[start..]);
    }

    fn check(v: &impl Serialize) {
        for html in [false, true] {
            for csv in [false, true] {
                let mut out = b"prefix".to_vec();
                let mut json = JsonOut::new(&mut out, html, csv);
                v.serialize(&mut json).expect("serializes");
                let special = json.special();
                let written = &out[6..];
                let expected = reference(v, html, csv);
                assert_eq!(
                    String::from_utf8_lossy(written),
                    String::from_utf8_lossy(&expected),
                    "html={html} csv={csv}"
                );
                assert_eq!(special, written.iter().any(|b| matches!(b, b'"' | b',')), "special of {written:?}");
            }
        }
    }

    /// The `identities` writer gives the bytes of the record's `identities` as serde_json writes
    /// them (and of the generic path through `IdentitiesSer`), alone and inside the whole record, in
    /// every mode, for login ids and providers that need escaping, and for users with only one kind
    /// of identity.
    #[test]
    fn identities_are_written_as_the_record_holds_them() {
        let hostile = ["a\"b@x.com", "+", "+15550001", "+1555 0001", "user,<name>&\u{2028}", "\\back\nslash", "é"];
        let mut users = Vec::new();
        for (i, login) in hostile.iter().enumerate() {
            let mut u = userexport_domain::fake::user(9, i as u64);
            u.login_ids = vec![(*login).to_owned(), "plain@example.com".to_owned()];
            u.authenticators.oauth_providers = vec![format!("prov\"{i}<&>"), "google".to_owned()];
            users.push(u.clone());
            u.authenticators.oauth_providers.clear();
            users.push(u.clone());
            u.login_ids.clear();
            u.authenticators.oauth_providers = vec!["github".to_owned()];
            users.push(u);
        }
        for u in &users {
            let record = u.view(userexport_domain::UserView::Authgear);
            let want = &record["identities"];
            for html in [false, true] {
                for csv in [false, true] {
                    let mut fast = Vec::new();
                    let mut json = JsonOut::new(&mut fast, html, csv);
                    json.view_value(&ViewValue::Identities(u)).unwrap();
                    assert!(json.special());
                    let mut generic = Vec::new();
                    ViewValue::Identities(u).serialize(&mut JsonOut::new(&mut generic, html, csv)).unwrap();
                    let expected = reference(want, html, csv);
                    assert_eq!(
                        String::from_utf8_lossy(&fast),
                        String::from_utf8_lossy(&expected),
                        "html={html} csv={csv}"
                    );
                    assert_eq!(fast, generic, "html={html} csv={csv}");

                    // The same identities inside the whole record.
                    let mut fast = Vec::new();
                    JsonOut::new(&mut fast, html, csv).view_value(&ViewValue::Record(u)).unwrap();
                    let mut generic = Vec::new();
                    ViewValue::Record(u).serialize(&mut JsonOut::new(&mut generic, html, csv)).unwrap();
                    let expected = reference(&record, html, csv);
                    assert_eq!(
                        String::from_utf8_lossy(&fast),
                        String::from_utf8_lossy(&expected),
                        "record: html={html} csv={csv}"
                    );
                    assert_eq!(fast, generic, "record: html={html} csv={csv}");
                }
            }
        }
    }

    #[test]
    fn fragments_double_their_quotes_at_compile_time() {
        assert_eq!(identity::TYPE.plain, br#","type":"#);
        assert_eq!(identity::TYPE.doubled, br#",""type"":"#);
        assert_eq!(identity::PROFILE.doubled, br#",""user_profile"":{}}}"#);
        assert_eq!(doubled_len(r#""""#), 4);
    }

    #[test]
    fn every_string_byte_is_escaped_as_serde_json_and_go_escape_it() {
        let mut all_ascii = String::new();
        for b in 0u8..0x80 {
            all_ascii.push(char::from(b));
        }
        for s in [
            all_ascii.as_str(),
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "<script>&amp;</script>",
            "line\u{2028}para\u{2029}end",
            "\u{2028}\u{2029}",
            "â€ almost \u{2027}\u{202A} \u{20AC} €",
            "\u{E2}",
            "emoji 👩‍👩‍👧 and ﷽",
            "trailing \u{1}\u{1f}\u{7f}",
            "\"\"\"",
            "a,b,c",
        ] {
            check(&s);
            check(&json!({ s: s }));
        }
    }

    /// The chunked scan finds what a byte-by-byte scan finds, wherever the byte lies in or after
    /// the 8-byte chunks, for both masks.
    #[test]
    fn first_escaped_finds_the_first_byte_of_the_class() {
        for len in 0..=20 {
            for at in 0..=len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f, b'<', b'&', 0xE2] {
                    let mut bytes = vec![b'a'; len];
                    if at < len {
                        bytes[at] = special;
                    }
                    // A second special byte later on never hides the first.
                    if at + 3 < len {
                        bytes[at + 3] = b'"';
                    }
                    for mask in [JSON, JSON | HTML] {
                        let want = bytes.iter().position(|&b| CLASS[usize::from(b)] & mask != 0);
                        assert_eq!(first_escaped(&bytes, mask), want, "{bytes:?} mask {mask}");
                    }
                }
            }
        }
    }

    /// Serialized with `collect_str`, in pieces.
    struct Pieces(&'static [&'static str]);

    impl Serialize for Pieces {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            struct Join<'a>(&'a [&'a str]);
            impl std::fmt::Display for Join<'_> {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    self.0.iter().try_for_each(|p| f.write_str(p))
                }
            }
            s.collect_str(&Join(self.0))
        }
    }

    #[test]
    fn displayed_values_are_escaped_piece_by_piece() {
        check(&Pieces(&["google", "-", "U123"]));
        check(&Pieces(&["a\"", "<b>", "\u{2028}", "", "\n,"]));
        check(&Pieces(&[]));
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        check(&json!([0, -1, 1, i64::MIN, i64::MAX, u64::MAX, 0.1, -0.0, 1e21, 1.5e-7, 123456.789, f64::MAX]));
        check(&(1u8, -2i8, 3u16, -4i16, 5u32, -6i32, 7u128, -8i128, 0.25f32, 1e30f32));
        check(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        check(&[f32::NAN]);
    }

    #[test]
    fn structures_are_written_as_serde_json_writes_them() {
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            Newtype(u8),
            Tuple(u8, &'static str),
            Struct { a: Option<u8>, b: Vec<u8> },
        }
        #[derive(serde::Serialize)]
        struct S<'a> {
            name: &'a str,
            unit: (),
            none: Option<u8>,
            some: Option<&'a str>,
            bytes: &'a [u8],
            nested: Vec<Vec<Value>>,
            variants: Vec<E>,
            ch: char,
            keys: std::collections::BTreeMap<i32, bool>,
            bool_keys: std::collections::BTreeMap<bool, u8>,
        }
        check(&S {
            name: "n\"ame",
            unit: (),
            none: None,
            some: Some("<x>"),
            bytes: &[1, 2, 255],
            nested: vec![vec![], vec![json!({}), json!([]), json!(null), json!({"a": [1, {"b": "c"}]})]],
            variants: vec![E::Unit, E::Newtype(1), E::Tuple(2, ","), E::Struct { a: None, b: vec![] }],
            ch: '"',
            keys: [(-1, true), (2, false)].into_iter().collect(),
            bool_keys: [(true, 1)].into_iter().collect(),
        });
        check(&json!([]));
        check(&json!({}));
        check(&json!([1]));
        check(&json!([1, 2]));
        check(&json!({"k": {}}));
    }

    /// A map with float keys (no std map type can hold them).
    struct FloatKeys(f64);

    impl Serialize for FloatKeys {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeMap;
            let mut m = s.serialize_map(None)?;
            m.serialize_entry(&self.0, &1)?;
            m.serialize_entry(&2.5f32, &2)?;
            m.end()
        }
    }

    #[test]
    fn float_keys_are_quoted_and_must_be_finite() {
        check(&FloatKeys(1.5));
        check(&FloatKeys(1e21));
        let mut out = Vec::new();
        let err = FloatKeys(f64::NAN).serialize(&mut JsonOut::new(&mut out, false, false)).unwrap_err();
        assert_eq!(err.to_string(), "float key must be finite");
        assert!(serde_json::to_vec(&FloatKeys(f64::NAN)).is_err(), "serde_json refuses it too");
    }

    #[test]
    fn keys_that_are_not_strings_or_numbers_are_errors() {
        let map: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
        let mut out = Vec::new();
        let err = map.serialize(&mut JsonOut::new(&mut out, false, false)).unwrap_err();
        assert_eq!(err.to_string(), "key must be a string");
        assert!(serde_json::to_vec(&map).is_err(), "serde_json refuses it too");
    }
}
