//! The internal user and its three vendor views (Authgear export record, Auth0 user, Descope user).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ids::UserId;

/// Account status, with Descope's four values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Active.
    #[default]
    Enabled,
    /// Blocked by an administrator.
    Disabled,
    /// Invited, has not signed in yet.
    Invited,
    /// Account validity has ended.
    Expired,
}

impl UserStatus {
    /// All statuses.
    pub const ALL: [UserStatus; 4] = [Self::Enabled, Self::Disabled, Self::Invited, Self::Expired];

    /// The lowercase name (`enabled`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Invited => "invited",
            Self::Expired => "expired",
        }
    }
}

impl std::str::FromStr for UserStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown user status `{s}`; expected one of enabled, disabled, invited, expired"))
    }
}

/// Membership of a user in a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserTenant {
    /// Tenant id.
    pub tenant_id: String,
    /// Tenant display name.
    pub tenant_name: String,
    /// Roles held in this tenant.
    #[serde(default)]
    pub role_names: Vec<String>,
}

/// A postal address (OIDC `address` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Address {
    /// Full address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    /// Street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Region / state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Summary of a user's authenticators. Secrets (password hashes, TOTP seeds) are never held here,
/// so they can never be exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Authenticators {
    /// Has a password.
    #[serde(default)]
    pub password: bool,
    /// Has a TOTP authenticator enrolled.
    #[serde(default)]
    pub totp: bool,
    /// Number of passkeys (WebAuthn).
    #[serde(default)]
    pub passkey_count: u32,
    /// Number of biometric keys.
    #[serde(default)]
    pub biometric_count: u32,
    /// Signs in through SAML SSO.
    #[serde(default)]
    pub saml: bool,
    /// OAuth providers linked (`google`, `github`, …).
    #[serde(default)]
    pub oauth_providers: Vec<String>,
    /// Email addresses enrolled as a second factor.
    #[serde(default)]
    pub mfa_emails: Vec<String>,
    /// Phone numbers enrolled as a second factor.
    #[serde(default)]
    pub mfa_phones: Vec<String>,
}

/// A user of a project: the one internal model behind all three vendor views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Public user id.
    pub id: UserId,
    /// Login ids (email, phone or username), unique per project.
    pub login_ids: Vec<String>,
    /// Username (`preferred_username`).
    pub username: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Phone number (E.164).
    pub phone: Option<String>,
    /// Whether the phone is verified.
    pub phone_verified: bool,
    /// Full name.
    pub name: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Middle name.
    pub middle_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// Nickname.
    pub nickname: Option<String>,
    /// Picture URL.
    pub picture: Option<String>,
    /// Gender.
    pub gender: Option<String>,
    /// Birthdate (`YYYY-MM-DD`).
    pub birthdate: Option<String>,
    /// Time zone (IANA name).
    pub zoneinfo: Option<String>,
    /// Locale (BCP 47).
    pub locale: Option<String>,
    /// Website URL.
    pub website: Option<String>,
    /// Profile page URL.
    pub profile: Option<String>,
    /// Postal address.
    pub address: Option<Address>,
    /// Account status.
    pub status: UserStatus,
    /// Descope test user.
    pub test: bool,
    /// Project-level roles.
    pub roles: Vec<String>,
    /// Tenant memberships.
    pub tenants: Vec<UserTenant>,
    /// Custom attributes.
    pub custom_attributes: Map<String, Value>,
    /// SSO applications the user may use (empty = all).
    pub sso_app_ids: Vec<String>,
    /// Authenticator summary.
    pub authenticators: Authenticators,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification time.
    pub updated_at: DateTime<Utc>,
    /// Last sign-in time.
    pub last_login_at: Option<DateTime<Utc>>,
    /// Number of sign-ins.
    pub logins_count: i64,
}

/// Which vendor's shape a user is rendered in, and so which paths field pointers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserView {
    /// Authgear's export record (snake_case, OIDC claims).
    #[default]
    Authgear,
    /// Auth0's user profile.
    Auth0,
    /// Descope's user object (camelCase).
    Descope,
}

impl UserView {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authgear => "authgear",
            Self::Auth0 => "auth0",
            Self::Descope => "descope",
        }
    }
}

impl std::str::FromStr for UserView {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "authgear" => Ok(Self::Authgear),
            "auth0" => Ok(Self::Auth0),
            "descope" => Ok(Self::Descope),
            _ => Err(format!("unknown view `{s}`; expected authgear, auth0 or descope")),
        }
    }
}

/// RFC 3339 UTC with nanoseconds, trailing zeros trimmed (Go's `RFC3339Nano`, used by Authgear).
pub fn rfc3339_nano(t: &DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // "…:SS.nnnnnnnnnZ" → trim zeros in the fraction.
    let (body, _) = s.split_at(s.len() - 1);
    let trimmed = body.trim_end_matches('0').trim_end_matches('.');
    format!("{trimmed}Z")
}

/// ISO 8601 UTC with milliseconds (`2017-11-02T23:34:03.803Z`, used by Auth0).
pub fn iso_millis(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn put_opt(map: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
        map.insert(key.to_owned(), Value::String(s.to_owned()));
    }
}

fn login_id_type(value: &str) -> &'static str {
    if value.contains('@') {
        "email"
    } else if value.starts_with('+') && value[1..].bytes().all(|b| b.is_ascii_digit()) {
        "phone"
    } else {
        "username"
    }
}

impl User {
    /// Renders the user in `view`.
    pub fn view(&self, view: UserView) -> Value {
        match view {
            UserView::Authgear => self.authgear_record(),
            UserView::Auth0 => self.auth0_user(),
            UserView::Descope => self.descope_user(),
        }
    }

    /// Authgear's export record: keys in Authgear's order, "if set" keys omitted when empty.
    ///
    /// Unlike Authgear, `mfa.totps` never carries the TOTP secret: it lists one `{"type":"totp"}`
    /// object per enrolled authenticator.
    pub fn authgear_record(&self) -> Value {
        let mut m = Map::new();
        m.insert("sub".into(), json!(self.id.as_str()));
        put_opt(&mut m, "preferred_username", &self.username);
        put_opt(&mut m, "email", &self.email);
        put_opt(&mut m, "phone_number", &self.phone);
        m.insert("email_verified".into(), json!(self.email_verified));
        m.insert("phone_number_verified".into(), json!(self.phone_verified));
        put_opt(&mut m, "name", &self.name);
        put_opt(&mut m, "given_name", &self.given_name);
        put_opt(&mut m, "family_name", &self.family_name);
        put_opt(&mut m, "middle_name", &self.middle_name);
        put_opt(&mut m, "nickname", &self.nickname);
        put_opt(&mut m, "profile", &self.profile);
        put_opt(&mut m, "picture", &self.picture);
        put_opt(&mut m, "website", &self.website);
        put_opt(&mut m, "gender", &self.gender);
        put_opt(&mut m, "birthdate", &self.birthdate);
        put_opt(&mut m, "zoneinfo", &self.zoneinfo);
        put_opt(&mut m, "locale", &self.locale);
        m.insert("address".into(), serde_json::to_value(self.address.clone().unwrap_or_default()).unwrap_or(json!({})));
        if !self.custom_attributes.is_empty() {
            m.insert("custom_attributes".into(), Value::Object(self.custom_attributes.clone()));
        }
        if !self.roles.is_empty() {
            m.insert("roles".into(), json!(self.roles));
        }
        m.insert("created_at".into(), json!(rfc3339_nano(&self.created_at)));
        m.insert("disabled".into(), json!(matches!(self.status, UserStatus::Disabled | UserStatus::Expired)));
        if let Some(t) = &self.last_login_at {
            m.insert("last_login_at".into(), json!(rfc3339_nano(t)));
        }
        m.insert("is_anonymized".into(), json!(false));
        let mut identities: Vec<Value> = self
            .login_ids
            .iter()
            .map(|v| {
                let ty = login_id_type(v);
                json!({"type": "login_id", "login_id": {"key": ty, "type": ty, "value": v, "original_value": v}})
            })
            .collect();
        identities.extend(self.authenticators.oauth_providers.iter().map(|p| {
            json!({"type": "oauth", "oauth": {"provider_alias": p, "provider_type": p,
                "provider_subject_id": format!("{}-{}", p, self.id), "user_profile": {}}})
        }));
        if !identities.is_empty() {
            m.insert("identities".into(), Value::Array(identities));
        }
        let a = &self.authenticators;
        let mut mfa = Map::new();
        if !a.mfa_emails.is_empty() {
            mfa.insert("emails".into(), json!(a.mfa_emails));
        }
        if !a.mfa_phones.is_empty() {
            mfa.insert("phone_numbers".into(), json!(a.mfa_phones));
        }
        if a.totp {
            mfa.insert("totps".into(), json!([{"type": "totp"}]));
        }
        m.insert("mfa".into(), Value::Object(mfa));
        m.insert("biometric_count".into(), json!(a.biometric_count));
        m.insert("passkey_count".into(), json!(a.passkey_count));
        Value::Object(m)
    }

    /// The Auth0 connection name of the user's primary identity.
    pub fn auth0_connection(&self) -> &str {
        if self.authenticators.password || self.authenticators.oauth_providers.is_empty() {
            "Username-Password-Authentication"
        } else {
            &self.authenticators.oauth_providers[0]
        }
    }

    /// Auth0's user profile (`user_id` = `auth0|<id>`; custom attributes as `user_metadata`, roles and
    /// tenants under `app_metadata`).
    pub fn auth0_user(&self) -> Value {
        let mut m = Map::new();
        m.insert("user_id".into(), json!(format!("auth0|{}", self.id)));
        put_opt(&mut m, "email", &self.email);
        m.insert("email_verified".into(), json!(self.email_verified));
        put_opt(&mut m, "username", &self.username);
        put_opt(&mut m, "phone_number", &self.phone);
        if self.phone.is_some() {
            m.insert("phone_verified".into(), json!(self.phone_verified));
        }
        put_opt(&mut m, "name", &self.name);
        put_opt(&mut m, "given_name", &self.given_name);
        put_opt(&mut m, "family_name", &self.family_name);
        put_opt(&mut m, "nickname", &self.nickname);
        put_opt(&mut m, "picture", &self.picture);
        m.insert("created_at".into(), json!(iso_millis(&self.created_at)));
        m.insert("updated_at".into(), json!(iso_millis(&self.updated_at)));
        if let Some(t) = &self.last_login_at {
            m.insert("last_login".into(), json!(iso_millis(t)));
        }
        m.insert("logins_count".into(), json!(self.logins_count));
        m.insert("blocked".into(), json!(self.status == UserStatus::Disabled));
        let mut identities = Vec::new();
        if self.authenticators.password || self.authenticators.oauth_providers.is_empty() {
            identities.push(json!({"connection": "Username-Password-Authentication", "provider": "auth0",
                "user_id": self.id.as_str(), "isSocial": false}));
        }
        for p in &self.authenticators.oauth_providers {
            identities.push(json!({"connection": p, "provider": p, "user_id": format!("{}-{}", p, self.id),
                "isSocial": true}));
        }
        m.insert("identities".into(), Value::Array(identities));
        if self.authenticators.totp {
            m.insert("multifactor".into(), json!(["guardian"]));
        }
        let tenants: Vec<&str> = self.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
        m.insert("app_metadata".into(), json!({"roles": self.roles, "tenants": tenants}));
        m.insert("user_metadata".into(), Value::Object(self.custom_attributes.clone()));
        Value::Object(m)
    }

    /// Descope's user object: every key present, empty values as `""`, `[]`, `{}` or `false`.
    pub fn descope_user(&self) -> Value {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let a = &self.authenticators;
        let oauth: Map<String, Value> = a.oauth_providers.iter().map(|p| (p.clone(), Value::Bool(true))).collect();
        let tenants: Vec<Value> = self
            .tenants
            .iter()
            .map(|t| {
                json!({"tenantId": t.tenant_id, "roleNames": t.role_names, "tenantName": t.tenant_name,
                "permissions": []})
            })
            .collect();
        json!({
            "loginIds": self.login_ids,
            "userId": self.id.as_str(),
            "name": s(&self.name),
            "email": s(&self.email),
            "phone": s(&self.phone),
            "verifiedEmail": self.email_verified,
            "verifiedPhone": self.phone_verified,
            "roleNames": self.roles,
            "userTenants": tenants,
            "status": self.status.as_str(),
            "externalIds": self.login_ids,
            "picture": s(&self.picture),
            "test": self.test,
            "customAttributes": self.custom_attributes,
            "createdTime": self.created_at.timestamp(),
            "TOTP": a.totp,
            "SAML": a.saml,
            "OAuth": oauth,
            "webauthn": a.passkey_count > 0,
            "password": a.password,
            "ssoAppIds": self.sso_app_ids,
            "givenName": s(&self.given_name),
            "middleName": s(&self.middle_name),
            "familyName": s(&self.family_name),
            "editable": true,
            "SCIM": false,
            "push": false,
            "permissions": [],
            "OIDC": false,
            "consentExpiration": 0,
            "recoveryEmail": "",
            "verifiedRecoveryEmail": false,
            "recoveryPhone": "",
            "verifiedRecoveryPhone": false,
            "modifiedTime": self.updated_at.timestamp(),
        })
    }
}

/// The 41 default Authgear CSV pointers, in Authgear's order.
pub const AUTHGEAR_DEFAULT_POINTERS: [&str; 41] = [
    "/sub",
    "/preferred_username",
    "/email",
    "/phone_number",
    "/email_verified",
    "/phone_number_verified",
    "/name",
    "/given_name",
    "/middle_name",
    "/nickname",
    "/profile",
    "/picture",
    "/website",
    "/gender",
    "/birthdate",
    "/zoneinfo",
    "/locale",
    "/address/formatted",
    "/address/street_address",
    "/address/locality",
    "/address/region",
    "/address/postal_code",
    "/address/country",
    "/roles",
    "/groups",
    "/disabled",
    "/created_at",
    "/delete_at",
    "/last_login_at",
    "/is_anonymized",
    "/anonymize_at",
    "/temporarily_disabled_from",
    "/temporarily_disabled_until",
    "/account_valid_from",
    "/account_valid_until",
    "/identities",
    "/mfa/emails",
    "/mfa/phone_numbers",
    "/mfa/totps",
    "/biometric_count",
    "/passkey_count",
];

/// Default Auth0 export fields: the exportable attribute list (JSON exports; CSV takes the scalar ones).
pub const AUTH0_DEFAULT_FIELDS: [&str; 17] = [
    "user_id",
    "email",
    "email_verified",
    "username",
    "phone_number",
    "phone_verified",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "created_at",
    "updated_at",
    "last_login",
    "logins_count",
    "blocked",
    "identities[0].connection",
];

/// Default Descope CSV fields (pointer, header).
pub const DESCOPE_DEFAULT_FIELDS: [(&str, &str); 11] = [
    ("/userId", "userId"),
    ("/loginIds", "loginIds"),
    ("/name", "name"),
    ("/email", "email"),
    ("/phone", "phone"),
    ("/status", "status"),
    ("/verifiedEmail", "verifiedEmail"),
    ("/verifiedPhone", "verifiedPhone"),
    ("/roleNames", "roleNames"),
    ("/userTenants", "userTenants"),
    ("/createdTime", "createdTime"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pointer::JsonPointer;
    use chrono::TimeZone;

    pub(crate) fn sample() -> User {
        let mut attrs = Map::new();
        attrs.insert("plan".into(), json!("pro"));
        attrs.insert("seats".into(), json!(5));
        User {
            id: UserId::parse("U2iOCFIwsdgeGvusdfkKUb9HJKsdi").unwrap(),
            login_ids: vec!["brian@example.com".into(), "+15551234567".into()],
            username: Some("brian".into()),
            email: Some("brian@example.com".into()),
            email_verified: true,
            phone: Some("+15551234567".into()),
            phone_verified: false,
            name: Some("Brian O'Neil".into()),
            given_name: Some("Brian".into()),
            middle_name: None,
            family_name: Some("O'Neil".into()),
            nickname: None,
            picture: None,
            gender: None,
            birthdate: Some("1990-01-02".into()),
            zoneinfo: None,
            locale: Some("en".into()),
            website: None,
            profile: None,
            address: Some(Address {
                formatted: Some("1 Main St, Town".into()),
                country: Some("US".into()),
                ..Default::default()
            }),
            status: UserStatus::Disabled,
            test: false,
            roles: vec!["admin".into(), "viewer".into()],
            tenants: vec![UserTenant {
                tenant_id: "T1".into(),
                tenant_name: "Acme".into(),
                role_names: vec!["owner".into()],
            }],
            custom_attributes: attrs,
            sso_app_ids: vec![],
            authenticators: Authenticators {
                password: true,
                totp: true,
                oauth_providers: vec!["google".into()],
                ..Default::default()
            },
            created_at: Utc.with_ymd_and_hms(2024, 6, 25, 21, 48, 54).unwrap() + chrono::Duration::milliseconds(120),
            updated_at: Utc.with_ymd_and_hms(2024, 7, 1, 0, 0, 0).unwrap(),
            last_login_at: None,
            logins_count: 3,
        }
    }

    #[test]
    fn all_41_authgear_default_pointers_parse_and_evaluate() {
        let rec = sample().authgear_record();
        let mut resolved = 0;
        for p in AUTHGEAR_DEFAULT_POINTERS {
            let ptr = JsonPointer::parse(p).unwrap();
            if ptr.resolve(&rec).is_some() {
                resolved += 1;
            }
        }
        // Everything the sample has set is present; unset "if set" keys are legitimately absent.
        assert!(resolved >= 20, "only {resolved} pointers resolved");
        assert_eq!(rec["address"]["formatted"], "1 Main St, Town");
        assert_eq!(rec["disabled"], true);
        assert_eq!(rec["created_at"], "2024-06-25T21:48:54.12Z");
        assert_eq!(rec["mfa"]["totps"][0]["type"], "totp");
        assert!(rec["mfa"]["totps"][0].get("secret").is_none(), "TOTP secrets are never exported");
        let keys: Vec<&String> = rec.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "sub");
        assert!(rec.get("middle_name").is_none(), "unset optional keys are omitted");
    }

    #[test]
    fn auth0_view_has_auth0_shapes() {
        let u = sample().auth0_user();
        assert_eq!(u["user_id"], "auth0|U2iOCFIwsdgeGvusdfkKUb9HJKsdi");
        assert_eq!(u["created_at"], "2024-06-25T21:48:54.120Z");
        assert_eq!(u["blocked"], true);
        assert_eq!(u["identities"][0]["connection"], "Username-Password-Authentication");
        assert_eq!(u["identities"][1]["isSocial"], true);
        assert_eq!(u["user_metadata"]["plan"], "pro");
        assert_eq!(u["app_metadata"]["roles"][1], "viewer");
        let ptr = JsonPointer::from_auth0_path("identities[0].connection").unwrap();
        assert_eq!(ptr.resolve(&u).unwrap(), "Username-Password-Authentication");
    }

    #[test]
    fn descope_view_emits_every_key() {
        let u = sample().descope_user();
        for key in [
            "loginIds",
            "userId",
            "name",
            "email",
            "phone",
            "verifiedEmail",
            "verifiedPhone",
            "roleNames",
            "userTenants",
            "status",
            "externalIds",
            "picture",
            "test",
            "customAttributes",
            "createdTime",
            "TOTP",
            "SAML",
            "OAuth",
            "webauthn",
            "password",
            "ssoAppIds",
            "givenName",
            "middleName",
            "familyName",
            "editable",
        ] {
            assert!(u.get(key).is_some(), "missing {key}");
        }
        assert_eq!(u["middleName"], "");
        assert_eq!(u["status"], "disabled");
        assert_eq!(u["createdTime"], 1719352134);
        assert_eq!(u["OAuth"]["google"], true);
        assert_eq!(u["userTenants"][0]["tenantName"], "Acme");
    }

    #[test]
    fn rfc3339_nano_trims_zeros() {
        let t = Utc.with_ymd_and_hms(2024, 10, 7, 21, 6, 24).unwrap();
        assert_eq!(rfc3339_nano(&t), "2024-10-07T21:06:24Z");
        let t = t + chrono::Duration::nanoseconds(361_634_370);
        assert_eq!(rfc3339_nano(&t), "2024-10-07T21:06:24.36163437Z");
    }
}
