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
        (_, None) => {
            if let Some(old) = slot.take() {
                spares.give(old);
            }
        }
    }
}

/// Runs `seed` over the JSON text `bytes` (which must hold exactly one value).
///
/// The whole text is checked to be UTF-8 once, with SIMD, and then parsed as a `str`: parsing bytes
/// would check every string of it again, one by one (2 % of a 1M-user export's CPU).
pub(crate) fn json_into<'de, S: DeserializeSeed<'de, Value = ()>>(bytes: &'de [u8], seed: S) -> serde_json::Result<()> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            seed.deserialize(&mut de)?;
            de.end()
        }
        // Not UTF-8: let serde_json say where.
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            seed.deserialize(&mut de)?;
            de.end()
        }
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
    /// Decodes the value into `slot`, reusing its buffers.
    fn decode_into<'de, D: Deserializer<'de>>(slot: &mut Self, d: D) -> Result<(), D::Error>;
}

impl DecodeInto for String {
    const EXPECTING: &'static str = "a string";
    fn decode_into<'de, D: Deserializer<'de>>(slot: &mut Self, d: D) -> Result<(), D::Error> {
        StrInto(slot).deserialize(d)
    }
}

impl DecodeInto for Address {
    const EXPECTING: &'static str = "an address object";
    fn decode_into<'de, D: Deserializer<'de>>(slot: &mut Self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(AddressInto(slot))
    }
}

/// A JSON value or `null` into an existing `Option`, reusing the value already there.
pub(crate) struct OptInto<'a, T>(pub(crate) &'a mut Option<T>);

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
        *self.0 = None;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        T::decode_into(self.0.get_or_insert_default(), d)
    }
}

/// A JSON array of strings into an existing `Vec<String>`, overwriting its strings in place (and
/// taking or giving spare ones as the list grows or shrinks).
pub(crate) struct StringsInto<'a>(pub(crate) &'a mut Vec<String>, pub(crate) &'a mut Spares);

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

struct AddressInto<'a>(&'a mut Address);

impl<'de> Visitor<'de> for AddressInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Destructured so that a new `Address` field fails to compile here until it is decoded.
        let Address { formatted, street_address, locality, region, postal_code, country } = self.0;
        let mut slots = [formatted, street_address, locality, region, postal_code, country];
        let mut seen = [false; ADDRESS_FIELDS.len()];
        while let Some(key) = map.next_key_seed(FieldIndex(ADDRESS_FIELDS))? {
            match key {
                Some(i) => {
                    first_time(&mut seen, i, ADDRESS_FIELDS)?;
                    map.next_value_seed(OptInto(slots[i]))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for (slot, seen) in slots.iter_mut().zip(seen) {
            if !seen {
                **slot = None;
            }
        }
        Ok(())
    }
}

const AUTHENTICATOR_FIELDS: &[&str] =
    &["password", "totp", "passkey_count", "biometric_count", "saml", "oauth_providers", "mfa_emails", "mfa_phones"];

/// A JSON authenticators object into an existing [`Authenticators`], its lists' strings reused.
pub(crate) struct AuthenticatorsInto<'a>(pub(crate) &'a mut Authenticators, pub(crate) &'a mut Spares);

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
            let got = json_into(json.as_bytes(), StringsInto(&mut slot, &mut Spares::default())).ok().map(|()| slot);
            assert_eq!(got, want, "{json}");
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
                let got = json_into(json.as_bytes(), OptInto(&mut slot)).ok().map(|()| slot);
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
                let got = json_into(json.as_bytes(), AuthenticatorsInto(&mut slot, &mut Spares::default()))
                    .ok()
                    .map(|()| slot);
                assert_eq!(got, want, "{json}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut v = Vec::new();
        let err = json_into(b"[\"\xff\"]", StringsInto(&mut v, &mut Spares::default())).unwrap_err();
        // serde_json's own message ("invalid unicode code point"), with the place of the bad byte.
        assert!(err.is_syntax(), "{err}");
        assert_eq!((err.line(), err.column()), (1, 3), "{err}");
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
        json_into(br#"["one","two"]"#, StringsInto(&mut v, &mut spares)).unwrap();
        assert_eq!(v, ["one", "two"]);
        assert_eq!(v[0].as_ptr(), before, "the first string's buffer was reused");
        let second = v[1].as_ptr();
        json_into(br#"[]"#, StringsInto(&mut v, &mut spares)).unwrap();
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
