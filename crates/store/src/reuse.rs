//! Decoding stored values into existing ones, reusing their buffers.
//!
//! The export reader decodes every row into a [`User`](userexport_domain::User) recycled from a
//! page the encoder has finished with, so that steady state allocates nothing per user: strings are
//! overwritten in place and the JSON columns it reads (`login_ids`, `address`, `roles`,
//! `sso_app_ids`, `authenticators`) are decoded by the [`DeserializeSeed`]s here, which write into
//! the existing `String`s and `Vec`s. They accept exactly what the derived `Deserialize` impls
//! accept for the JSON this crate writes (the tests compare both on the same inputs).

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use userexport_domain::user::{Address, Authenticators};

/// Replaces the contents of `slot` with `s`.
pub(crate) fn set_str(slot: &mut String, s: &str) {
    slot.clear();
    slot.push_str(s);
}

/// Emptied strings kept for the decoders here: a value that turns NULL or a list that gets shorter
/// gives its strings back, one that appears or grows takes them, so that steady state allocates
/// nothing even though rows differ in which values they have (a third of the reader's allocations
/// and frees before). Bounded: at most [`Spares::MAX`] strings of at most [`Spares::MAX_CAPACITY`].
#[derive(Debug, Default)]
pub(crate) struct Spares(Vec<String>);

impl Spares {
    /// Strings kept at most.
    const MAX: usize = 256;
    /// Larger buffers are freed instead of kept.
    const MAX_CAPACITY: usize = 4096;

    /// An empty string, with a buffer when one is spare.
    fn take(&mut self) -> String {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `s`'s buffer for later, if it has one worth keeping.
    fn give(&mut self, mut s: String) {
        if self.0.len() < Self::MAX && (1..=Self::MAX_CAPACITY).contains(&s.capacity()) {
            s.clear();
            self.0.push(s);
        }
    }

    /// Gives back every string of `v` from index `from` on.
    fn give_tail(&mut self, v: &mut Vec<String>, from: usize) {
        for s in v.drain(from..) {
            self.give(s);
        }
    }
}

/// Replaces `slot` with `s`, reusing the buffer of a string already there or a spare one.
pub(crate) fn set_opt_str(slot: &mut Option<String>, s: Option<&str>, spares: &mut Spares) {
    match (slot.as_mut(), s) {
        (Some(buf), Some(s)) => set_str(buf, s),
        (None, Some(s)) => {
            let mut buf = spares.take();
            buf.push_str(s);
            *slot = Some(buf);
        }
        (_, None) => OptInto(slot, spares).clear(),
    }
}

/// Runs `seed` over the JSON text `text` (which must hold exactly one value).
pub(crate) fn json_into<'de, S: DeserializeSeed<'de, Value = ()>>(text: &'de str, seed: S) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut de)?;
    de.end()
}

/// A JSON array of strings (`login_ids`, `roles`, `sso_app_ids`) into `v`, reusing its strings: the
/// [`Canonical`] fast path for what this crate writes, else serde ([`StringsInto`]).
pub(crate) fn strings_json_into(text: &str, v: &mut Vec<String>, spares: &mut Spares) -> serde_json::Result<()> {
    if Canonical::parse(text, |c| c.strings_into(v, spares)) {
        return Ok(());
    }
    json_into(text, StringsInto(v, spares))
}

/// A JSON authenticators object into `a`, reusing its lists: the [`Canonical`] fast path for what
/// this crate writes, else serde ([`AuthenticatorsInto`]).
pub(crate) fn authenticators_json_into(
    text: &str,
    a: &mut Authenticators,
    spares: &mut Spares,
) -> serde_json::Result<()> {
    if Canonical::parse(text, |c| c.authenticators_into(a, spares)) {
        return Ok(());
    }
    json_into(text, AuthenticatorsInto(a, spares))
}

/// A parser of exactly the JSON this crate stores: serde_json's compact output of the derived
/// `Serialize` impls (no whitespace, fields in declaration order, and, in the common case, strings
/// without escapes). Anything else, valid JSON or not, is `None`, and the caller parses the value
/// again with serde, which then accepts or rejects it exactly as before; so this path only has to
/// be right on what it accepts. It is the reader's hot path: serde's general parser was a third of
/// the reader thread's time (key lookups, per-token dispatch), this is a few comparisons.
struct Canonical<'a> {
    text: &'a str,
    pos: usize,
}

impl Canonical<'_> {
    /// Whether `value` parsed the whole of `text`; false means "ask serde", and `value` may have
    /// written part of its target.
    fn parse(text: &str, value: impl FnOnce(&mut Canonical<'_>) -> Option<()>) -> bool {
        let mut c = Canonical { text, pos: 0 };
        value(&mut c).and_then(|()| c.end()).is_some()
    }

    fn rest(&self) -> &[u8] {
        &self.text.as_bytes()[self.pos..]
    }

    /// Consumes `lit` if the text continues with it.
    fn lit(&mut self, lit: &str) -> Option<()> {
        let found = self.rest().starts_with(lit.as_bytes());
        found.then(|| self.pos += lit.len())
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.lit("true").is_some() { Some(true) } else { self.lit("false").map(|()| false) }
    }

    /// A non-negative integer without sign, fraction, exponent or leading zero that fits a `u32`.
    fn count(&mut self) -> Option<u32> {
        let digits = self.rest().iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && self.rest()[0] == b'0') {
            return None;
        }
        let n = self.text[self.pos..self.pos + digits].parse().ok()?;
        self.pos += digits;
        Some(n)
    }

    /// A string without escapes or control characters, borrowed from the text.
    fn string(&mut self) -> Option<&str> {
        self.lit("\"")?;
        let len = self.rest().iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.rest()[len] != b'"' {
            return None;
        }
        // Both ends are ASCII quotes, so the slice is on character boundaries.
        let start = self.pos;
        self.pos += len + 1;
        Some(&self.text[start..start + len])
    }

    /// An array of such strings into `v` (strings reused, taken from or given to `spares`).
    fn strings_into(&mut self, v: &mut Vec<String>, spares: &mut Spares) -> Option<()> {
        self.lit("[")?;
        let mut n = 0;
        if self.lit("]").is_none() {
            loop {
                let s = self.string()?;
                if n == v.len() {
                    v.push(spares.take());
                }
                set_str(&mut v[n], s);
                n += 1;
                if self.lit(",").is_none() {
                    self.lit("]")?;
                    break;
                }
            }
        }
        spares.give_tail(v, n);
        Some(())
    }

    fn authenticators_into(&mut self, a: &mut Authenticators, spares: &mut Spares) -> Option<()> {
        // Destructured so that a new `Authenticators` field fails to compile here until it is read.
        let Authenticators {
            password,
            totp,
            passkey_count,
            biometric_count,
            saml,
            oauth_providers,
            mfa_emails,
            mfa_phones,
        } = a;
        self.lit("{\"password\":")?;
        *password = self.boolean()?;
        self.lit(",\"totp\":")?;
        *totp = self.boolean()?;
        self.lit(",\"passkey_count\":")?;
        *passkey_count = self.count()?;
        self.lit(",\"biometric_count\":")?;
        *biometric_count = self.count()?;
        self.lit(",\"saml\":")?;
        *saml = self.boolean()?;
        self.lit(",\"oauth_providers\":")?;
        self.strings_into(oauth_providers, spares)?;
        self.lit(",\"mfa_emails\":")?;
        self.strings_into(mfa_emails, spares)?;
        self.lit(",\"mfa_phones\":")?;
        self.strings_into(mfa_phones, spares)?;
        self.lit("}")
    }

    /// The whole text was consumed.
    fn end(&self) -> Option<()> {
        (self.pos == self.text.len()).then_some(())
    }
}

/// A JSON string into an existing `String`.
struct StrInto<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for StrInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for StrInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        set_str(self.0, v);
        Ok(())
    }
}

/// A value decoded in place by [`OptInto`] when the JSON holds one.
trait DecodeInto: Default {
    /// What the JSON must hold, for error messages.
    const EXPECTING: &'static str;
    /// Decodes the value into `slot`, reusing its buffers (and spare strings).
    fn decode_into<'de, D: Deserializer<'de>>(slot: &mut Self, d: D, spares: &mut Spares) -> Result<(), D::Error>;
    /// A value to decode into where there was none.
    fn fresh(_spares: &mut Spares) -> Self {
        Self::default()
    }
    /// Gives the value's strings to `spares` (a value that went `null`).
    fn recycle(self, spares: &mut Spares);
}

impl DecodeInto for String {
    const EXPECTING: &'static str = "a string";
    fn decode_into<'de, D: Deserializer<'de>>(slot: &mut Self, d: D, _: &mut Spares) -> Result<(), D::Error> {
        StrInto(slot).deserialize(d)
    }
    fn fresh(spares: &mut Spares) -> Self {
        spares.take()
    }
    fn recycle(self, spares: &mut Spares) {
        spares.give(self);
    }
}

impl DecodeInto for Address {
    const EXPECTING: &'static str = "an address object";
    fn decode_into<'de, D: Deserializer<'de>>(slot: &mut Self, d: D, spares: &mut Spares) -> Result<(), D::Error> {
        d.deserialize_map(AddressInto(slot, spares))
    }
    fn recycle(self, spares: &mut Spares) {
        // Destructured so that a new `Address` field fails to compile here until it is recycled.
        let Address { formatted, street_address, locality, region, postal_code, country } = self;
        for s in [formatted, street_address, locality, region, postal_code, country].into_iter().flatten() {
            spares.give(s);
        }
    }
}

/// A JSON value or `null` into an existing `Option`, reusing the value already there (or spare
/// strings) and giving a value that went `null` to the spares.
struct OptInto<'a, T>(&'a mut Option<T>, &'a mut Spares);

impl<T: DecodeInto> OptInto<'_, T> {
    fn clear(self) {
        if let Some(old) = self.0.take() {
            old.recycle(self.1);
        }
    }
}

impl<'de, T: DecodeInto> DeserializeSeed<'de> for OptInto<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: DecodeInto> Visitor<'de> for OptInto<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or null", T::EXPECTING)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.clear();
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.clear();
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let OptInto(slot, spares) = self;
        let value = match slot {
            Some(value) => value,
            None => slot.insert(T::fresh(spares)),
        };
        T::decode_into(value, d, spares)
    }
}

/// An address column (JSON object or `null`) into `slot`; SQL `NULL` is `None` as well.
pub(crate) fn address_into(
    text: Option<&str>,
    slot: &mut Option<Address>,
    spares: &mut Spares,
) -> serde_json::Result<()> {
    match text {
        Some(text) => json_into(text, OptInto(slot, spares)),
        None => {
            OptInto(slot, spares).clear();
            Ok(())
        }
    }
}

/// A JSON array of strings into an existing `Vec<String>`, overwriting its strings in place (and
/// taking or giving spare ones as the list grows or shrinks).
struct StringsInto<'a>(&'a mut Vec<String>, &'a mut Spares);

impl<'de> DeserializeSeed<'de> for StringsInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StringsInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let StringsInto(v, spares) = self;
        let mut n = 0;
        loop {
            if n == v.len() {
                // A slot that stays unused goes back to the spares below.
                v.push(spares.take());
            }
            if seq.next_element_seed(StrInto(&mut v[n]))?.is_none() {
                break;
            }
            n += 1;
        }
        spares.give_tail(v, n);
        Ok(())
    }
}

/// An object key, as its index in a list of field names (None: a key we ignore).
struct FieldIndex(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldIndex {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldIndex {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == v))
    }
}

/// Rejects a key seen twice, as the derived impls do.
fn first_time<E: de::Error>(seen: &mut [bool], i: usize, names: &[&'static str]) -> Result<(), E> {
    if std::mem::replace(&mut seen[i], true) {
        return Err(E::duplicate_field(names[i]));
    }
    Ok(())
}

const ADDRESS_FIELDS: &[&str] = &["formatted", "street_address", "locality", "region", "postal_code", "country"];

struct AddressInto<'a>(&'a mut Address, &'a mut Spares);

impl<'de> Visitor<'de> for AddressInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Destructured so that a new `Address` field fails to compile here until it is decoded.
        let AddressInto(address, spares) = self;
        let Address { formatted, street_address, locality, region, postal_code, country } = address;
        let slots = [formatted, street_address, locality, region, postal_code, country];
        let mut seen = [false; ADDRESS_FIELDS.len()];
        while let Some(key) = map.next_key_seed(FieldIndex(ADDRESS_FIELDS))? {
            match key {
                Some(i) => {
                    first_time(&mut seen, i, ADDRESS_FIELDS)?;
                    map.next_value_seed(OptInto(&mut *slots[i], &mut *spares))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for (slot, seen) in slots.into_iter().zip(seen) {
            if !seen {
                OptInto(slot, &mut *spares).clear();
            }
        }
        Ok(())
    }
}

const AUTHENTICATOR_FIELDS: &[&str] =
    &["password", "totp", "passkey_count", "biometric_count", "saml", "oauth_providers", "mfa_emails", "mfa_phones"];

/// A JSON authenticators object into an existing [`Authenticators`], its lists' strings reused.
struct AuthenticatorsInto<'a>(&'a mut Authenticators, &'a mut Spares);

impl<'de> DeserializeSeed<'de> for AuthenticatorsInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AuthenticatorsInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an authenticators object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Destructured so that a new `Authenticators` field fails to compile here until it is decoded.
        let Authenticators {
            password,
            totp,
            passkey_count,
            biometric_count,
            saml,
            oauth_providers,
            mfa_emails,
            mfa_phones,
        } = self.0;
        let spares = self.1;
        // Every field is `#[serde(default)]`: absent means false, 0 or empty.
        *password = false;
        *totp = false;
        *passkey_count = 0;
        *biometric_count = 0;
        *saml = false;
        for list in [&mut *oauth_providers, &mut *mfa_emails, &mut *mfa_phones] {
            spares.give_tail(list, 0);
        }
        let mut seen = [false; AUTHENTICATOR_FIELDS.len()];
        while let Some(key) = map.next_key_seed(FieldIndex(AUTHENTICATOR_FIELDS))? {
            let Some(i) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            first_time(&mut seen, i, AUTHENTICATOR_FIELDS)?;
            match i {
                0 => *password = map.next_value()?,
                1 => *totp = map.next_value()?,
                2 => *passkey_count = map.next_value()?,
                3 => *biometric_count = map.next_value()?,
                4 => *saml = map.next_value()?,
                5 => map.next_value_seed(StringsInto(oauth_providers, spares))?,
                6 => map.next_value_seed(StringsInto(mfa_emails, spares))?,
                _ => map.next_value_seed(StringsInto(mfa_phones, spares))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input decodes in place exactly as the derived impl decodes it (or both fail), whatever
    /// the slot held before.
    #[test]
    fn in_place_decoding_agrees_with_the_derived_impls() {
        let strings = [
            r#"[]"#,
            r#"["a"]"#,
            r#"["a@example.com","+15551234567","x"]"#,
            r#"["esc\"aped\\","\u00e9\n\u2028"]"#,
            r#"[1]"#,
            r#"{}"#,
            r#"["a"] x"#,
        ];
        let dirty = || vec!["left".to_owned(), "over".to_owned(), "from before".to_owned()];
        for json in strings {
            let want = serde_json::from_str::<Vec<String>>(json).ok();
            let mut slot = dirty();
            let got = json_into(json, StringsInto(&mut slot, &mut Spares::default())).ok().map(|()| slot);
            assert_eq!(got, want, "{json}");
            let mut slot = dirty();
            let got = strings_json_into(json, &mut slot, &mut Spares::default()).ok().map(|()| slot);
            assert_eq!(got, want, "fast path: {json}");
        }

        let addresses = [
            "null",
            "{}",
            r#"{"country":"US"}"#,
            r#"{"formatted":"1 Main St\nSpringfield","street_address":"1 Main St","locality":"Springfield","region":"IL","postal_code":"62701","country":"US"}"#,
            r#"{"locality":null,"unknown":{"deep":[1,2]},"region":"R\u00e9gion \"x\""}"#,
            r#"{"country":"US","country":"FR"}"#,
            r#"{"country":5}"#,
        ];
        let full = || {
            Some(Address {
                formatted: Some("old".into()),
                street_address: Some("old".into()),
                locality: Some("old".into()),
                region: Some("old".into()),
                postal_code: Some("old".into()),
                country: Some("old".into()),
            })
        };
        for json in addresses {
            let want = serde_json::from_str::<Option<Address>>(json).ok();
            for mut slot in [full(), None] {
                let got = json_into(json, OptInto(&mut slot, &mut Spares::default())).ok().map(|()| slot);
                assert_eq!(got, want, "{json}");
            }
        }

        let authenticators = [
            "{}",
            r#"{"password":true}"#,
            r#"{"password":true,"totp":true,"passkey_count":2,"biometric_count":1,"saml":true,"oauth_providers":["google","github"],"mfa_emails":["a@x.com"],"mfa_phones":["+1555"]}"#,
            r#"{"mfa_emails":[],"other":true,"passkey_count":7}"#,
            r#"{"passkey_count":-1}"#,
            r#"{"totp":true,"totp":false}"#,
            r#"null"#,
        ];
        let used = || Authenticators {
            password: true,
            totp: true,
            passkey_count: 9,
            biometric_count: 9,
            saml: true,
            oauth_providers: vec!["x".into(), "y".into(), "z".into()],
            mfa_emails: vec!["e".into()],
            mfa_phones: vec!["p".into(), "q".into()],
        };
        for json in authenticators {
            let want = serde_json::from_str::<Authenticators>(json).ok();
            for mut slot in [used(), Authenticators::default()] {
                let mut via_serde = slot.clone();
                let got = json_into(json, AuthenticatorsInto(&mut via_serde, &mut Spares::default()))
                    .ok()
                    .map(|()| via_serde);
                assert_eq!(got, want, "{json}");
                let got = authenticators_json_into(json, &mut slot, &mut Spares::default()).ok().map(|()| slot);
                assert_eq!(got, want, "fast path: {json}");
            }
        }
    }

    /// The fast path takes what this crate writes (serde_json's output of the derived impls), and
    /// declines (None: serde decides) anything it does not parse exactly, valid JSON or not.
    #[test]
    fn the_canonical_fast_path_takes_what_the_writer_writes() {
        let parse = |json: &str, a: &mut Authenticators| {
            let mut c = Canonical { text: json, pos: 0 };
            c.authenticators_into(a, &mut Spares::default()).and_then(|()| c.end())
        };
        let samples = [
            Authenticators::default(),
            Authenticators {
                password: true,
                totp: true,
                passkey_count: u32::MAX,
                biometric_count: 10,
                saml: true,
                oauth_providers: vec!["google".into(), "github".into()],
                mfa_emails: vec!["a@example.com".into()],
                mfa_phones: vec!["+15551234567".into(), "".into()],
            },
        ];
        for want in samples {
            let json = serde_json::to_string(&want).unwrap();
            let mut got = Authenticators { passkey_count: 3, mfa_emails: vec!["old".into()], ..Default::default() };
            assert_eq!(parse(&json, &mut got), Some(()), "{json}");
            assert_eq!(got, want);
            for list in [&want.oauth_providers, &want.mfa_emails] {
                let json = serde_json::to_string(list).unwrap();
                let mut c = Canonical { text: &json, pos: 0 };
                let mut got = vec!["x".to_owned(); 5];
                assert_eq!(c.strings_into(&mut got, &mut Spares::default()).and_then(|()| c.end()), Some(()));
                assert_eq!(&got, list);
            }
        }
        let canonical = r#"{"password":true,"totp":false,"passkey_count":2,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#;
        assert_eq!(parse(canonical, &mut Authenticators::default()), Some(()));
        for declined in [
            // Valid JSON the fast path leaves to serde.
            r#"{"password":true, "totp":false,"passkey_count":2,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"totp":false,"password":true,"passkey_count":2,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"password":true,"totp":false,"passkey_count":2,"biometric_count":0,"saml":false,"oauth_providers":["a"b"],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"password":true}"#,
            // Invalid for the type, or not JSON at all.
            r#"{"password":true,"totp":false,"passkey_count":02,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"password":true,"totp":false,"passkey_count":4294967296,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"password":true,"totp":false,"passkey_count":-1,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"password":true,"totp":false,"passkey_count":1.0,"biometric_count":0,"saml":false,"oauth_providers":[],"mfa_emails":[],"mfa_phones":[]}"#,
            r#"{"password":tru,"totp":false}"#,
            &format!("{canonical} "),
            &canonical[..canonical.len() - 1],
        ] {
            assert_eq!(parse(declined, &mut Authenticators::default()), None, "{declined}");
        }
        for declined in
            ["[\"a\",]", "[,]", "[\"a\"\"b\"]", "[\"tab\there\"]", "[\"a\\u0041\"]", "[1]", " []", "[\"a\"", "[\"a"]
        {
            let mut c = Canonical { text: declined, pos: 0 };
            let declined_here = c.strings_into(&mut Vec::new(), &mut Spares::default()).and_then(|()| c.end());
            assert_eq!(declined_here, None, "{declined}");
        }
    }

    #[test]
    fn strings_are_replaced_in_place() {
        let mut spares = Spares::default();
        let mut slot = Some(String::with_capacity(64));
        let before = slot.as_deref().map(str::as_ptr);
        set_opt_str(&mut slot, Some("new value"), &mut spares);
        assert_eq!(slot.as_deref(), Some("new value"));
        assert_eq!(slot.as_deref().map(str::as_ptr), before, "the buffer was reused");
        set_opt_str(&mut slot, None, &mut spares);
        assert_eq!(slot, None);
        set_opt_str(&mut slot, Some("again"), &mut spares);
        assert_eq!(slot.as_deref(), Some("again"));
        assert_eq!(slot.as_deref().map(str::as_ptr), before, "the buffer went to the spares and came back");

        let mut v = vec![String::with_capacity(32)];
        let before = v[0].as_ptr();
        json_into(r#"["one","two"]"#, StringsInto(&mut v, &mut spares)).unwrap();
        assert_eq!(v, ["one", "two"]);
        assert_eq!(v[0].as_ptr(), before, "the first string's buffer was reused");
        let second = v[1].as_ptr();
        json_into("[]", StringsInto(&mut v, &mut spares)).unwrap();
        assert!(v.is_empty());
        let mut other = None;
        set_opt_str(&mut other, Some("x"), &mut spares);
        assert!([before, second].contains(&other.as_deref().unwrap().as_ptr()), "a list's strings are spares too");
    }

    #[test]
    fn spares_are_bounded() {
        let mut spares = Spares::default();
        spares.give(String::with_capacity(Spares::MAX_CAPACITY + 1));
        spares.give(String::new());
        assert!(spares.0.is_empty(), "huge buffers are freed, empty ones are not buffers");
        for _ in 0..Spares::MAX + 10 {
            spares.give(String::from("12345678"));
        }
        assert_eq!(spares.0.len(), Spares::MAX);
        assert!(spares.0.iter().all(|s| s.is_empty() && s.capacity() == 8));
    }
}
