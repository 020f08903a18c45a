//! The internal user and its three vendor views (Authgear export record, Auth0 user, Descope user).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ids::UserId;
use crate::pointer::JsonPointer;

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

/// The type of a login id in the Authgear record's `identities`: `email` (has an `@`), `phone` (`+`
/// and digits) or `username`.
pub fn login_id_type(value: &str) -> &'static str {
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

/// A JSON pointer into the Authgear record ([`User::authgear_record`]), compiled once so that
/// [`User::authgear_get`] evaluates it on a user without building the record: exports resolve dozens
/// of pointers per user, and building the record allocates a map, strings and nested objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthgearPointer {
    pointer: JsonPointer,
    key: AuthgearKey,
}

/// The top-level key of the Authgear record a pointer starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthgearKey {
    Record,
    Sub,
    PreferredUsername,
    Email,
    PhoneNumber,
    EmailVerified,
    PhoneNumberVerified,
    Name,
    GivenName,
    FamilyName,
    MiddleName,
    Nickname,
    Profile,
    Picture,
    Website,
    Gender,
    Birthdate,
    Zoneinfo,
    Locale,
    Address,
    CustomAttributes,
    Roles,
    CreatedAt,
    Disabled,
    LastLoginAt,
    IsAnonymized,
    Identities,
    Mfa,
    BiometricCount,
    PasskeyCount,
    /// A key the record never has (`/groups`, `/delete_at`, …).
    Absent,
}

impl AuthgearPointer {
    /// Compiles `pointer` for the Authgear record.
    pub fn new(pointer: &JsonPointer) -> Self {
        use AuthgearKey as K;
        let key = match pointer.tokens().first().map(String::as_str) {
            None => K::Record,
            Some("sub") => K::Sub,
            Some("preferred_username") => K::PreferredUsername,
            Some("email") => K::Email,
            Some("phone_number") => K::PhoneNumber,
            Some("email_verified") => K::EmailVerified,
            Some("phone_number_verified") => K::PhoneNumberVerified,
            Some("name") => K::Name,
            Some("given_name") => K::GivenName,
            Some("family_name") => K::FamilyName,
            Some("middle_name") => K::MiddleName,
            Some("nickname") => K::Nickname,
            Some("profile") => K::Profile,
            Some("picture") => K::Picture,
            Some("website") => K::Website,
            Some("gender") => K::Gender,
            Some("birthdate") => K::Birthdate,
            Some("zoneinfo") => K::Zoneinfo,
            Some("locale") => K::Locale,
            Some("address") => K::Address,
            Some("custom_attributes") => K::CustomAttributes,
            Some("roles") => K::Roles,
            Some("created_at") => K::CreatedAt,
            Some("disabled") => K::Disabled,
            Some("last_login_at") => K::LastLoginAt,
            Some("is_anonymized") => K::IsAnonymized,
            Some("identities") => K::Identities,
            Some("mfa") => K::Mfa,
            Some("biometric_count") => K::BiometricCount,
            Some("passkey_count") => K::PasskeyCount,
            Some(_) => K::Absent,
        };
        Self { pointer: pointer.clone(), key }
    }

    /// The pointer as given.
    pub fn pointer(&self) -> &JsonPointer {
        &self.pointer
    }

    /// The parts of a user [`User::authgear_get`] reads for this pointer.
    pub fn parts(&self) -> UserParts {
        use AuthgearKey as K;
        let n = UserParts::NONE;
        match self.key {
            K::Record => UserParts::AUTHGEAR_RECORD,
            K::Address => UserParts { address: true, ..n },
            K::CustomAttributes => UserParts { custom_attributes: true, ..n },
            K::Roles => UserParts { roles: true, ..n },
            // Pointers into an identity or a TOTP entry build the whole record.
            K::Identities if self.pointer.tokens().len() > 1 => UserParts::AUTHGEAR_RECORD,
            K::Mfa if self.pointer.tokens().len() > 2 && self.pointer.tokens()[1] == "totps" => {
                UserParts::AUTHGEAR_RECORD
            }
            K::Identities => UserParts { login_ids: true, authenticators: true, ..n },
            K::Mfa | K::BiometricCount | K::PasskeyCount => UserParts { authenticators: true, ..n },
            _ => n,
        }
    }
}

/// The JSON-stored parts of a [`User`] a reader needs. A reader that needs only some of them may
/// be given users whose other parts are empty ([`UserParts::project`]): the store then skips reading
/// and parsing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserParts {
    /// `login_ids`.
    pub login_ids: bool,
    /// `address`.
    pub address: bool,
    /// `roles`.
    pub roles: bool,
    /// `tenants`.
    pub tenants: bool,
    /// `custom_attributes`.
    pub custom_attributes: bool,
    /// `sso_app_ids`.
    pub sso_app_ids: bool,
    /// `authenticators`.
    pub authenticators: bool,
}

impl UserParts {
    /// Every part.
    pub const ALL: Self = Self {
        login_ids: true,
        address: true,
        roles: true,
        tenants: true,
        custom_attributes: true,
        sso_app_ids: true,
        authenticators: true,
    };

    /// No part (scalar fields only).
    pub const NONE: Self = Self {
        login_ids: false,
        address: false,
        roles: false,
        tenants: false,
        custom_attributes: false,
        sso_app_ids: false,
        authenticators: false,
    };

    /// The parts the whole Authgear record shows.
    pub const AUTHGEAR_RECORD: Self = Self {
        login_ids: true,
        address: true,
        roles: true,
        custom_attributes: true,
        authenticators: true,
        ..Self::NONE
    };

    /// Parts needed by either.
    pub fn union(self, o: Self) -> Self {
        Self {
            login_ids: self.login_ids || o.login_ids,
            address: self.address || o.address,
            roles: self.roles || o.roles,
            tenants: self.tenants || o.tenants,
            custom_attributes: self.custom_attributes || o.custom_attributes,
            sso_app_ids: self.sso_app_ids || o.sso_app_ids,
            authenticators: self.authenticators || o.authenticators,
        }
    }

    /// Empties the parts of `user` that are not in `self`: what a reader of `self` may be given.
    pub fn project(self, user: &mut User) {
        if !self.login_ids {
            user.login_ids = Vec::new();
        }
        if !self.address {
            user.address = None;
        }
        if !self.roles {
            user.roles = Vec::new();
        }
        if !self.tenants {
            user.tenants = Vec::new();
        }
        if !self.custom_attributes {
            user.custom_attributes = Map::new();
        }
        if !self.sso_app_ids {
            user.sso_app_ids = Vec::new();
        }
        if !self.authenticators {
            user.authenticators = Authenticators::default();
        }
    }
}

/// What a pointer finds in a user's view, borrowed from the user where possible. Serializing it
/// (with `serde_json`) gives exactly the bytes of serializing the `serde_json::Value` the pointer
/// resolves to in the view document.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewValue<'a> {
    /// The pointer does not resolve (a missing key or index). Serializes as `null`.
    Missing,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(&'a str),
    /// A time, rendered as a string by [`rfc3339_nano`].
    Time(&'a DateTime<Utc>),
    /// Any JSON value found in the user (custom attributes, or a view built as JSON).
    Json(&'a Value),
    /// A JSON value built for this lookup.
    Owned(Value),
    /// An array of strings.
    Strings(&'a [String]),
    /// The Authgear `address` object.
    Address(&'a Address),
    /// The custom attributes object.
    Attributes(&'a Map<String, Value>),
    /// The Authgear `identities` array.
    Identities(&'a User),
    /// The Authgear `mfa` object.
    Mfa(&'a Authenticators),
    /// The Authgear `mfa.totps` array.
    Totps,
    /// The whole Authgear record.
    Record(&'a User),
}

impl ViewValue<'_> {
    /// Whether the value is a JSON array or object (rendered as JSON text in CSV cells).
    pub fn is_composite(&self) -> bool {
        match self {
            Self::Json(v) => v.is_array() || v.is_object(),
            Self::Owned(v) => v.is_array() || v.is_object(),
            Self::Strings(_)
            | Self::Address(_)
            | Self::Attributes(_)
            | Self::Identities(_)
            | Self::Mfa(_)
            | Self::Totps
            | Self::Record(_) => true,
            Self::Missing | Self::Bool(_) | Self::Int(_) | Self::Str(_) | Self::Time(_) => false,
        }
    }
}

/// An address with no parts: what the record shows for a user without one.
const NO_ADDRESS: Address =
    Address { formatted: None, street_address: None, locality: None, region: None, postal_code: None, country: None };

/// RFC 3339 with trimmed nanoseconds, formatted into `buf` without allocating; `None` for times
/// [`rfc3339_nano`] formats differently (years outside 0..=9999, leap seconds).
fn rfc3339_nano_into<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 32]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    fn digits(buf: &mut [u8], mut v: u32) {
        for b in buf.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    // The fields of the UTC date and time, taken once (each accessor of a `DateTime` converts it).
    let utc = t.naive_utc();
    let (date, time) = (utc.date(), utc.time());
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    buf[..20].copy_from_slice(b"0000-00-00T00:00:00.");
    digits(&mut buf[0..4], year);
    digits(&mut buf[5..7], date.month());
    digits(&mut buf[8..10], date.day());
    digits(&mut buf[11..13], time.hour());
    digits(&mut buf[14..16], time.minute());
    digits(&mut buf[17..19], time.second());
    let mut len = 19;
    if nanos != 0 {
        digits(&mut buf[20..29], nanos);
        len = 29;
        while buf[len - 1] == b'0' {
            len -= 1;
        }
    }
    buf[len] = b'Z';
    std::str::from_utf8(&buf[..=len]).ok()
}

/// Calls `f` with `t` formatted by [`rfc3339_nano`], allocating only for unusual times.
pub fn with_rfc3339_nano<R>(t: &DateTime<Utc>, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 32];
    match rfc3339_nano_into(t, &mut buf) {
        Some(s) => f(s),
        None => f(&rfc3339_nano(t)),
    }
}

/// RFC 6901 array index: `0` or digits without a leading zero (as [`JsonPointer::resolve`]).
fn array_index(t: &str) -> Option<usize> {
    if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Evaluates `tokens` from `cur` like [`JsonPointer::resolve`].
fn walk<'a>(mut cur: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    for t in tokens {
        cur = match cur {
            Value::Object(map) => map.get(t)?,
            Value::Array(items) => items.get(array_index(t)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn opt_view<'a>(v: &'a Option<String>, rest: &[String]) -> ViewValue<'a> {
    match v.as_deref() {
        Some(s) if !s.is_empty() && rest.is_empty() => ViewValue::Str(s),
        _ => ViewValue::Missing,
    }
}

fn strings_view<'a>(v: &'a [String], rest: &[String]) -> ViewValue<'a> {
    match rest {
        _ if v.is_empty() => ViewValue::Missing,
        [] => ViewValue::Strings(v),
        [i] => array_index(i).and_then(|i| v.get(i)).map_or(ViewValue::Missing, |s| ViewValue::Str(s)),
        _ => ViewValue::Missing,
    }
}

impl User {
    /// Evaluates `p` against this user's Authgear record ([`User::authgear_record`]) without building
    /// it (except for rare deep pointers into built objects). `Missing` where
    /// `p.pointer().resolve(&self.authgear_record())` is `None`; otherwise a value that serializes to
    /// the same JSON.
    pub fn authgear_get<'a>(&'a self, p: &AuthgearPointer) -> ViewValue<'a> {
        use AuthgearKey as K;
        let rest = p.pointer.tokens().get(1..).unwrap_or(&[]);
        let scalar = |v: ViewValue<'a>| if rest.is_empty() { v } else { ViewValue::Missing };
        let a = &self.authenticators;
        match p.key {
            K::Record => ViewValue::Record(self),
            K::Sub => scalar(ViewValue::Str(self.id.as_str())),
            K::PreferredUsername => opt_view(&self.username, rest),
            K::Email => opt_view(&self.email, rest),
            K::PhoneNumber => opt_view(&self.phone, rest),
            K::EmailVerified => scalar(ViewValue::Bool(self.email_verified)),
            K::PhoneNumberVerified => scalar(ViewValue::Bool(self.phone_verified)),
            K::Name => opt_view(&self.name, rest),
            K::GivenName => opt_view(&self.given_name, rest),
            K::FamilyName => opt_view(&self.family_name, rest),
            K::MiddleName => opt_view(&self.middle_name, rest),
            K::Nickname => opt_view(&self.nickname, rest),
            K::Profile => opt_view(&self.profile, rest),
            K::Picture => opt_view(&self.picture, rest),
            K::Website => opt_view(&self.website, rest),
            K::Gender => opt_view(&self.gender, rest),
            K::Birthdate => opt_view(&self.birthdate, rest),
            K::Zoneinfo => opt_view(&self.zoneinfo, rest),
            K::Locale => opt_view(&self.locale, rest),
            K::Address => {
                let addr = self.address.as_ref().unwrap_or(&NO_ADDRESS);
                let part = match rest {
                    [] => return ViewValue::Address(addr),
                    [k] => match k.as_str() {
                        "formatted" => &addr.formatted,
                        "street_address" => &addr.street_address,
                        "locality" => &addr.locality,
                        "region" => &addr.region,
                        "postal_code" => &addr.postal_code,
                        "country" => &addr.country,
                        _ => return ViewValue::Missing,
                    },
                    _ => return ViewValue::Missing,
                };
                part.as_deref().map_or(ViewValue::Missing, ViewValue::Str)
            }
            K::CustomAttributes => match rest {
                _ if self.custom_attributes.is_empty() => ViewValue::Missing,
                [] => ViewValue::Attributes(&self.custom_attributes),
                [first, deeper @ ..] => self
                    .custom_attributes
                    .get(first)
                    .and_then(|v| walk(v, deeper))
                    .map_or(ViewValue::Missing, ViewValue::Json),
            },
            K::Roles => strings_view(&self.roles, rest),
            K::CreatedAt => scalar(ViewValue::Time(&self.created_at)),
            K::Disabled => scalar(ViewValue::Bool(matches!(self.status, UserStatus::Disabled | UserStatus::Expired))),
            K::LastLoginAt => match &self.last_login_at {
                Some(t) => scalar(ViewValue::Time(t)),
                None => ViewValue::Missing,
            },
            K::IsAnonymized => scalar(ViewValue::Bool(false)),
            K::Identities if self.login_ids.is_empty() && a.oauth_providers.is_empty() => ViewValue::Missing,
            K::Identities if rest.is_empty() => ViewValue::Identities(self),
            K::Mfa => match rest {
                [] => ViewValue::Mfa(a),
                [k, deeper @ ..] => match k.as_str() {
                    "emails" => strings_view(&a.mfa_emails, deeper),
                    "phone_numbers" => strings_view(&a.mfa_phones, deeper),
                    "totps" if a.totp && deeper.is_empty() => ViewValue::Totps,
                    "totps" if a.totp => self.authgear_deep(p),
                    _ => ViewValue::Missing,
                },
            },
            K::BiometricCount => scalar(ViewValue::Int(i64::from(a.biometric_count))),
            K::PasskeyCount => scalar(ViewValue::Int(i64::from(a.passkey_count))),
            K::Identities => self.authgear_deep(p),
            K::Absent => ViewValue::Missing,
        }
    }

    /// The slow path of [`User::authgear_get`]: builds the record and resolves the pointer in it.
    fn authgear_deep(&self, p: &AuthgearPointer) -> ViewValue<'static> {
        p.pointer.resolve(&self.authgear_record()).map_or(ViewValue::Missing, |v| ViewValue::Owned(v.clone()))
    }
}

impl Serialize for ViewValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Missing => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Int(i) => s.serialize_i64(*i),
            Self::Str(v) => s.serialize_str(v),
            Self::Time(t) => with_rfc3339_nano(t, |v| s.serialize_str(v)),
            Self::Json(v) => v.serialize(s),
            Self::Owned(v) => v.serialize(s),
            Self::Strings(v) => v.serialize(s),
            Self::Address(a) => a.serialize(s),
            Self::Attributes(m) => m.serialize(s),
            Self::Identities(u) => IdentitiesSer(u).serialize(s),
            Self::Mfa(a) => MfaSer(a).serialize(s),
            Self::Totps => TotpsSer.serialize(s),
            Self::Record(u) => RecordSer(u).serialize(s),
        }
    }
}

/// The Authgear record of a user, serialized in [`User::authgear_record`]'s key order.
struct RecordSer<'a>(&'a User);

impl Serialize for RecordSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let u = self.0;
        let mut m = s.serialize_map(None)?;
        let opt = |m: &mut S::SerializeMap, key: &str, v: &Option<String>| match v.as_deref() {
            Some(v) if !v.is_empty() => m.serialize_entry(key, v),
            _ => Ok(()),
        };
        m.serialize_entry("sub", u.id.as_str())?;
        opt(&mut m, "preferred_username", &u.username)?;
        opt(&mut m, "email", &u.email)?;
        opt(&mut m, "phone_number", &u.phone)?;
        m.serialize_entry("email_verified", &u.email_verified)?;
        m.serialize_entry("phone_number_verified", &u.phone_verified)?;
        opt(&mut m, "name", &u.name)?;
        opt(&mut m, "given_name", &u.given_name)?;
        opt(&mut m, "family_name", &u.family_name)?;
        opt(&mut m, "middle_name", &u.middle_name)?;
        opt(&mut m, "nickname", &u.nickname)?;
        opt(&mut m, "profile", &u.profile)?;
        opt(&mut m, "picture", &u.picture)?;
        opt(&mut m, "website", &u.website)?;
        opt(&mut m, "gender", &u.gender)?;
        opt(&mut m, "birthdate", &u.birthdate)?;
        opt(&mut m, "zoneinfo", &u.zoneinfo)?;
        opt(&mut m, "locale", &u.locale)?;
        m.serialize_entry("address", u.address.as_ref().unwrap_or(&NO_ADDRESS))?;
        if !u.custom_attributes.is_empty() {
            m.serialize_entry("custom_attributes", &u.custom_attributes)?;
        }
        if !u.roles.is_empty() {
            m.serialize_entry("roles", &u.roles)?;
        }
        m.serialize_entry("created_at", &ViewValue::Time(&u.created_at))?;
        m.serialize_entry("disabled", &matches!(u.status, UserStatus::Disabled | UserStatus::Expired))?;
        if let Some(t) = &u.last_login_at {
            m.serialize_entry("last_login_at", &ViewValue::Time(t))?;
        }
        m.serialize_entry("is_anonymized", &false)?;
        let a = &u.authenticators;
        if !u.login_ids.is_empty() || !a.oauth_providers.is_empty() {
            m.serialize_entry("identities", &IdentitiesSer(u))?;
        }
        m.serialize_entry("mfa", &MfaSer(a))?;
        m.serialize_entry("biometric_count", &a.biometric_count)?;
        m.serialize_entry("passkey_count", &a.passkey_count)?;
        m.end()
    }
}

/// The newtype-struct name the record's `identities` array serializes under. Newtype structs are
/// transparent to `serde_json` and most serializers; a serializer with a faster writer for the
/// array (the export encoder's) recognizes the name and writes the user's identities itself.
pub const IDENTITIES_NEWTYPE: &str = "$userexport::identities";

/// The record's `identities` array: one login id identity per login id, then one OAuth identity per
/// provider; wrapped in a newtype struct named [`IDENTITIES_NEWTYPE`].
struct IdentitiesSer<'a>(&'a User);

impl Serialize for IdentitiesSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(IDENTITIES_NEWTYPE, &IdentitiesArray(self.0))
    }
}

/// The array of [`IdentitiesSer`].
struct IdentitiesArray<'a>(&'a User);

impl Serialize for IdentitiesArray<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct LoginId<'a>(&'a str);
        impl Serialize for LoginId<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let ty = login_id_type(self.0);
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("key", ty)?;
                m.serialize_entry("type", ty)?;
                m.serialize_entry("value", self.0)?;
                m.serialize_entry("original_value", self.0)?;
                m.end()
            }
        }
        struct OAuth<'a>(&'a str, &'a User);
        impl Serialize for OAuth<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("provider_alias", self.0)?;
                m.serialize_entry("provider_type", self.0)?;
                m.serialize_entry("provider_subject_id", &SubjectId(self.0, &self.1.id))?;
                m.serialize_entry("user_profile", &EmptyObject)?;
                m.end()
            }
        }
        let u = self.0;
        let mut seq = s.serialize_seq(None)?;
        for v in &u.login_ids {
            seq.serialize_element(&Tagged("login_id", &LoginId(v)))?;
        }
        for p in &u.authenticators.oauth_providers {
            seq.serialize_element(&Tagged("oauth", &OAuth(p, u)))?;
        }
        seq.end()
    }
}

/// An OAuth identity's `provider_subject_id`, `<provider>-<user id>`, serialized without building
/// the string first.
struct SubjectId<'a>(&'a str, &'a UserId);

impl Serialize for SubjectId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}-{}", self.0, self.1))
    }
}

/// `{}`.
struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::ser::SerializeMap::end(s.serialize_map(Some(0))?)
    }
}

/// `{"type": tag, tag: value}`.
struct Tagged<'a, T>(&'a str, &'a T);

impl<T: Serialize> Serialize for Tagged<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.0)?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

/// The record's `mfa` object.
struct MfaSer<'a>(&'a Authenticators);

impl Serialize for MfaSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let a = self.0;
        let mut m = s.serialize_map(None)?;
        if !a.mfa_emails.is_empty() {
            m.serialize_entry("emails", &a.mfa_emails)?;
        }
        if !a.mfa_phones.is_empty() {
            m.serialize_entry("phone_numbers", &a.mfa_phones)?;
        }
        if a.totp {
            m.serialize_entry("totps", &TotpsSer)?;
        }
        m.end()
    }
}

/// `[{"type": "totp"}]`: one enrolled TOTP authenticator, never its secret.
struct TotpsSer;

impl Serialize for TotpsSer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Totp;
        impl Serialize for Totp {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("type", "totp")?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&Totp)?;
        seq.end()
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

    /// Pointers whose fast evaluation must agree with resolving them in the built record.
    const PROBES: [&str; 30] = [
        "",
        "/address",
        "/address/formatted",
        "/address/nope",
        "/address/country/0",
        "/custom_attributes",
        "/custom_attributes/plan",
        "/custom_attributes/plan/0",
        "/custom_attributes/tags/1",
        "/roles",
        "/roles/0",
        "/roles/01",
        "/roles/0/x",
        "/identities",
        "/identities/0",
        "/identities/0/login_id/value",
        "/identities/1/oauth/provider_subject_id",
        "/identities/9",
        "/mfa",
        "/mfa/emails",
        "/mfa/emails/0",
        "/mfa/phone_numbers",
        "/mfa/totps",
        "/mfa/totps/0/type",
        "/mfa/x",
        "/sub/0",
        "/created_at",
        "/last_login_at",
        "/email_verified/x",
        "/groups",
    ];

    #[test]
    fn authgear_get_agrees_with_the_record() {
        let mut users: Vec<User> = (0..3000).map(|i| crate::fake::user(7, i)).collect();
        users.push(sample());
        let mut odd = sample();
        odd.address = Some(Address { formatted: Some(String::new()), ..Default::default() });
        odd.email = Some(String::new());
        odd.login_ids.clear();
        odd.authenticators.oauth_providers.clear();
        odd.authenticators.mfa_emails = vec!["a<b>@x.com".into()];
        odd.last_login_at = Some(Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap());
        users.push(odd);
        let pointers: Vec<JsonPointer> =
            AUTHGEAR_DEFAULT_POINTERS.iter().chain(PROBES.iter()).map(|p| JsonPointer::parse(p).unwrap()).collect();
        let compiled: Vec<AuthgearPointer> = pointers.iter().map(AuthgearPointer::new).collect();
        for u in &users {
            let rec = u.authgear_record();
            for (ptr, c) in pointers.iter().zip(&compiled) {
                let fast = u.authgear_get(c);
                let mut projected = u.clone();
                c.parts().project(&mut projected);
                assert_eq!(
                    serde_json::to_string(&projected.authgear_get(c)).unwrap(),
                    serde_json::to_string(&fast).unwrap(),
                    "{ptr} of {} reads outside its parts",
                    u.id
                );
                match ptr.resolve(&rec) {
                    None => assert_eq!(fast, ViewValue::Missing, "{ptr} of {}", u.id),
                    Some(v) => {
                        assert_ne!(fast, ViewValue::Missing, "{ptr} of {}", u.id);
                        let want = serde_json::to_string(v).unwrap();
                        assert_eq!(serde_json::to_string(&fast).unwrap(), want, "{ptr} of {}", u.id);
                        assert_eq!(fast.is_composite(), v.is_array() || v.is_object(), "{ptr}");
                    }
                }
            }
        }
    }

    #[test]
    fn fast_rfc3339_nano_matches_chrono() {
        let base = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap();
        let mut times = vec![
            base,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
        ];
        for n in [1, 10, 100, 120_000_000, 999_999_999, 500_000_000, 1_000, 361_634_370] {
            times.push(base + chrono::Duration::nanoseconds(n));
        }
        for i in 0..5000i64 {
            times.push(base + chrono::Duration::microseconds(i * 7_919_993_117));
        }
        for t in &times {
            assert_eq!(with_rfc3339_nano(t, str::to_owned), rfc3339_nano(t));
        }
    }
}
