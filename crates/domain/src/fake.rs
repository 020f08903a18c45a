//! Deterministic, realistic fake users for seeding and tests.
//!
//! `user(seed, i)` depends only on `(seed, i)`, so any range of a seeded population can be generated
//! independently (in parallel chunks) and tests can recompute the expected users. The data is made to
//! hurt exporters: unicode names, commas, quotes, newlines and spreadsheet-formula-like values.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::ids::UserId;
use crate::user::{Address, Authenticators, User, UserStatus, UserTenant};

const GIVEN: &[&str] = &[
    "Brian",
    "Zoë",
    "José",
    "Łukasz",
    "Ana María",
    "Chloé",
    "Søren",
    "Mei",
    "Yūki",
    "Ahmed",
    "O'Brien",
    "François",
    "Ölgä",
    "Jean-Luc",
    "Nnamdi",
    "Åsa",
    "Dương",
    "Ελένη",
    "Иван",
    "محمد",
    "美咲",
    "=cmd",
    "+Plus",
    "-Minus",
    "@at",
];
const FAMILY: &[&str] = &[
    "Smith",
    "García",
    "Müller",
    "Nguyễn",
    "O'Neil",
    "Kowalski",
    "Østergaard",
    "\"Quoted\"",
    "Comma, Jr.",
    "Line\nBreak",
    "Tab\tSeparated",
    "=SUM(A1:A9)",
    "D'Angelo",
    "van der Berg",
    "李",
    "Петров",
    "  Leading",
    "Trailing  ",
    "Ben-David",
    "Smith;Jones",
];
const TENANTS: &[(&str, &str)] =
    &[("T-acme", "Acme, Inc."), ("T-globex", "Globex"), ("T-initech", "Initech \"Main\""), ("T-umbrella", "Umbrella")];
const ROLES: &[&str] = &["admin", "editor", "viewer", "billing", "support"];
const PLANS: &[&str] = &["free", "pro", "team", "enterprise"];
const PROVIDERS: &[&str] = &["google", "github", "apple", "microsoft"];
const LOCALES: &[&str] = &["en", "en-GB", "fr", "de", "ja", "zh-Hant-TW", "es-419"];

fn rng_for(seed: u64, index: u64) -> StdRng {
    // SplitMix64 mixing of (seed, index) into one well-spread seed.
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// The fixed epoch all fake timestamps are offsets from.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap()
}

/// The `index`-th fake user of population `seed`.
pub fn user(seed: u64, index: u64) -> User {
    let mut r = rng_for(seed, index);
    let id = UserId::generate_with(&mut r);
    let given = pick(&mut r, GIVEN).to_owned();
    let family = pick(&mut r, FAMILY).to_owned();
    let email = format!("user{index}.{}@example{}.com", seed, index % 7);
    let has_phone = r.random_bool(0.6);
    let phone = has_phone.then(|| format!("+1555{:07}", index % 10_000_000));
    let mut login_ids = vec![email.clone()];
    if let Some(p) = &phone
        && r.random_bool(0.3)
    {
        login_ids.push(p.clone());
    }
    let status = match r.random_range(0..100) {
        0..=84 => UserStatus::Enabled,
        85..=92 => UserStatus::Disabled,
        93..=97 => UserStatus::Invited,
        _ => UserStatus::Expired,
    };
    let mut tenants = Vec::new();
    for (id, name) in TENANTS {
        if r.random_bool(0.3) {
            let role = pick(&mut r, ROLES);
            tenants.push(UserTenant {
                tenant_id: (*id).into(),
                tenant_name: (*name).into(),
                role_names: vec![role.into()],
            });
        }
    }
    let roles: Vec<String> = ROLES.iter().filter(|_| r.random_bool(0.2)).map(|s| (*s).into()).collect();
    let mut attrs = Map::new();
    attrs.insert("plan".into(), json!(pick(&mut r, PLANS)));
    attrs.insert("seats".into(), json!(r.random_range(1..500)));
    if r.random_bool(0.2) {
        attrs.insert("note".into(), Value::String("=HYPERLINK(\"http://x\")".into()));
    }
    let created_at = epoch() + Duration::seconds(index as i64 * 37 + r.random_range(0..30));
    let updated_at = created_at + Duration::seconds(r.random_range(0..86_400 * 30));
    let last_login_at = r.random_bool(0.7).then(|| updated_at + Duration::seconds(r.random_range(0..86_400)));
    let totp = r.random_bool(0.25);
    let oauth: Vec<String> = PROVIDERS.iter().filter(|_| r.random_bool(0.1)).map(|s| (*s).into()).collect();
    User {
        id,
        login_ids,
        username: r.random_bool(0.3).then(|| format!("user_{index}")),
        email: Some(email),
        email_verified: r.random_bool(0.8),
        phone,
        phone_verified: r.random_bool(0.5),
        name: Some(format!("{given} {family}")),
        given_name: Some(given),
        middle_name: r.random_bool(0.1).then(|| "Q.".to_owned()),
        family_name: Some(family),
        nickname: r.random_bool(0.2).then(|| format!("nick{index}")),
        picture: r.random_bool(0.5).then(|| format!("https://img.example.com/u/{index}.png?s=64&d=identicon")),
        gender: r.random_bool(0.3).then(|| pick(&mut r, &["female", "male", "other"]).to_owned()),
        birthdate: r
            .random_bool(0.3)
            .then(|| format!("19{:02}-{:02}-{:02}", 50 + index % 50, 1 + index % 12, 1 + index % 28)),
        zoneinfo: r.random_bool(0.3).then(|| "Europe/Paris".to_owned()),
        locale: r.random_bool(0.5).then(|| pick(&mut r, LOCALES).to_owned()),
        website: None,
        profile: None,
        address: r.random_bool(0.2).then(|| Address {
            formatted: Some(format!("{} Main St, Apt \"{}\"\nSpringfield", index % 1000, index % 10)),
            street_address: Some(format!("{} Main St", index % 1000)),
            locality: Some("Springfield".into()),
            region: Some("IL".into()),
            postal_code: Some("62704".into()),
            country: Some("US".into()),
        }),
        status,
        test: r.random_bool(0.02),
        roles,
        tenants,
        custom_attributes: attrs,
        sso_app_ids: Vec::new(),
        authenticators: Authenticators {
            password: oauth.is_empty() || r.random_bool(0.5),
            totp,
            passkey_count: r.random_range(0..3),
            biometric_count: 0,
            saml: r.random_bool(0.05),
            oauth_providers: oauth,
            mfa_emails: Vec::new(),
            mfa_phones: Vec::new(),
        },
        created_at,
        updated_at,
        last_login_at,
        logins_count: r.random_range(0..1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        assert_eq!(user(42, 17), user(42, 17));
        assert_ne!(user(42, 17).id, user(42, 18).id);
        assert_ne!(user(42, 17).id, user(43, 17).id);
        let users: Vec<User> = (0..500).map(|i| user(1, i)).collect();
        let ids: std::collections::HashSet<_> = users.iter().map(|u| u.id.clone()).collect();
        assert_eq!(ids.len(), 500);
        assert!(users.iter().any(|u| u.name.as_deref().unwrap().contains('\n')));
        assert!(users.iter().any(|u| u.name.as_deref().unwrap().contains('"')));
        assert!(users.iter().any(|u| u.family_name.as_deref().unwrap().starts_with('=')));
        assert!(users.iter().any(|u| u.status == UserStatus::Disabled));
        assert!(users.iter().any(|u| u.test));
    }
}
