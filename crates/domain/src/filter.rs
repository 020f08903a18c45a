//! User filters shared by Descope search and filtered exports of every dialect.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::user::{User, UserStatus};

/// Which test users a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestUsers {
    /// Real users only (Descope's default).
    #[default]
    Exclude,
    /// Real and test users.
    Include,
    /// Test users only.
    Only,
}

/// A conjunction of user predicates; an empty list or `None` means "no filter" for that predicate.
///
/// List predicates match if the user matches *any* element. Time ranges are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserFilter {
    /// User ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_ids: Vec<String>,
    /// Login ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub login_ids: Vec<String>,
    /// Email addresses (case-insensitive).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// Phone numbers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    /// Member of at least one of these tenants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenant_ids: Vec<String>,
    /// Has at least one of these roles (project or tenant level).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub role_names: Vec<String>,
    /// In one of these statuses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<UserStatus>,
    /// May use one of these SSO apps (a user with no restriction may use all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sso_app_ids: Vec<String>,
    /// Case-insensitive substring of user id, login ids, name, email or phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Custom attribute equality; an array value means "any of".
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub custom_attributes: Map<String, Value>,
    /// Created at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_from: Option<DateTime<Utc>>,
    /// Created at or before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_to: Option<DateTime<Utc>>,
    /// Modified at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_from: Option<DateTime<Utc>>,
    /// Modified at or before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_to: Option<DateTime<Utc>>,
    /// Only users that sign in through SSO (SAML).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sso_only: bool,
    /// Test-user handling.
    pub test_users: TestUsers,
}

/// The most entries a list predicate may hold.
pub const MAX_FILTER_VALUES: usize = 1000;

impl UserFilter {
    /// True when no predicate is set (test users still follow [`TestUsers`]).
    pub fn is_empty(&self) -> bool {
        *self == UserFilter { test_users: self.test_users, ..Default::default() }
    }

    /// Checks list sizes; returns the name of the first oversized list.
    pub fn check_sizes(&self) -> Result<(), &'static str> {
        let lists: [(&'static str, usize); 8] = [
            ("user_ids", self.user_ids.len()),
            ("login_ids", self.login_ids.len()),
            ("emails", self.emails.len()),
            ("phones", self.phones.len()),
            ("tenant_ids", self.tenant_ids.len()),
            ("role_names", self.role_names.len()),
            ("sso_app_ids", self.sso_app_ids.len()),
            ("custom_attributes", self.custom_attributes.len()),
        ];
        match lists.into_iter().find(|(_, n)| *n > MAX_FILTER_VALUES) {
            Some((name, _)) => Err(name),
            None => Ok(()),
        }
    }

    /// The reference semantics of the filter. Stores may push predicates into SQL, but must agree
    /// with this function.
    pub fn matches(&self, u: &User) -> bool {
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| list.is_empty() || list.iter().any(|v| f(v));
        match self.test_users {
            TestUsers::Exclude if u.test => return false,
            TestUsers::Only if !u.test => return false,
            _ => {}
        }
        any(&self.user_ids, &|v| u.id.as_str() == v)
            && any(&self.login_ids, &|v| u.login_ids.iter().any(|l| l == v))
            && any(&self.emails, &|v| u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(v)))
            && any(&self.phones, &|v| u.phone.as_deref() == Some(v))
            && any(&self.tenant_ids, &|v| u.tenants.iter().any(|t| t.tenant_id == v))
            && any(&self.role_names, &|v| {
                u.roles.iter().any(|r| r == v) || u.tenants.iter().any(|t| t.role_names.iter().any(|r| r == v))
            })
            && (self.statuses.is_empty() || self.statuses.contains(&u.status))
            && any(&self.sso_app_ids, &|v| u.sso_app_ids.is_empty() || u.sso_app_ids.iter().any(|a| a == v))
            && self.text.as_deref().is_none_or(|t| text_matches(u, t))
            && self.custom_attributes.iter().all(|(k, want)| attr_matches(u.custom_attributes.get(k), want))
            && self.created_from.is_none_or(|t| u.created_at >= t)
            && self.created_to.is_none_or(|t| u.created_at <= t)
            && self.modified_from.is_none_or(|t| u.updated_at >= t)
            && self.modified_to.is_none_or(|t| u.updated_at <= t)
            && (!self.sso_only || u.authenticators.saml)
    }
}

/// A field a user search can be ordered by (Descope's `sort[].field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    /// The user id (`id`).
    UserId,
    /// Creation time (`createdTime`).
    CreatedTime,
    /// Last modification (`modifiedTime`).
    ModifiedTime,
    /// Display name, empty when unset (`displayName`).
    DisplayName,
    /// Email, empty when unset (`email`).
    Email,
    /// Phone number, empty when unset (`phoneNumber`).
    Phone,
    /// Status (`status`).
    Status,
    /// The first login id (`externalId`).
    ExternalId,
}

impl SortField {
    /// Every field, for documentation and tests.
    pub const ALL: [SortField; 8] = [
        Self::UserId,
        Self::CreatedTime,
        Self::ModifiedTime,
        Self::DisplayName,
        Self::Email,
        Self::Phone,
        Self::Status,
        Self::ExternalId,
    ];

    /// Descope's name of the field.
    pub fn descope_name(self) -> &'static str {
        match self {
            Self::UserId => "id",
            Self::CreatedTime => "createdTime",
            Self::ModifiedTime => "modifiedTime",
            Self::DisplayName => "displayName",
            Self::Email => "email",
            Self::Phone => "phoneNumber",
            Self::Status => "status",
            Self::ExternalId => "externalId",
        }
    }

    /// The field named `name` in Descope's vocabulary.
    pub fn from_descope(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.descope_name() == name)
    }

    /// The value `u` is ordered by (text compares bytewise, times chronologically).
    pub fn value(self, u: &User) -> SortValue {
        let text = |v: &Option<String>| SortValue::Text(v.clone().unwrap_or_default());
        match self {
            Self::UserId => SortValue::Text(u.id.as_str().to_owned()),
            Self::CreatedTime => SortValue::Time(u.created_at),
            Self::ModifiedTime => SortValue::Time(u.updated_at),
            Self::DisplayName => text(&u.name),
            Self::Email => text(&u.email),
            Self::Phone => text(&u.phone),
            Self::Status => SortValue::Text(u.status.as_str().to_owned()),
            Self::ExternalId => SortValue::Text(u.login_ids.first().cloned().unwrap_or_default()),
        }
    }
}

/// The value of a [`SortField`] for one user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SortValue {
    /// Text, ordered bytewise.
    Text(String),
    /// A point in time.
    Time(DateTime<Utc>),
}

/// One sort key: a field and a direction. Ties are always broken by insertion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSort {
    /// What to order by.
    pub field: SortField,
    /// Descending instead of ascending.
    pub desc: bool,
}

fn text_matches(u: &User, text: &str) -> bool {
    let needle = text.to_lowercase();
    let hit = |s: &str| s.to_lowercase().contains(&needle);
    hit(u.id.as_str())
        || u.login_ids.iter().any(|l| hit(l))
        || [&u.name, &u.email, &u.phone, &u.given_name, &u.family_name].into_iter().flatten().any(|s| hit(s))
}

fn attr_matches(have: Option<&Value>, want: &Value) -> bool {
    let Some(have) = have else { return false };
    match want {
        Value::Array(options) => options.iter().any(|w| w == have),
        w => w == have,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake;
    use serde_json::json;

    #[test]
    fn empty_filter_matches_all_real_users() {
        let f = UserFilter::default();
        assert!(f.is_empty());
        let users: Vec<User> = (0..200).map(|i| fake::user(1, i)).collect();
        let real = users.iter().filter(|u| !u.test).count();
        assert_eq!(users.iter().filter(|u| f.matches(u)).count(), real);
        let all = UserFilter { test_users: TestUsers::Include, ..Default::default() };
        assert_eq!(users.iter().filter(|u| all.matches(u)).count(), 200);
    }

    #[test]
    fn predicates_combine_with_and() {
        let mut u = fake::user(1, 0);
        u.test = false;
        u.status = UserStatus::Enabled;
        u.roles = vec!["admin".into()];
        u.custom_attributes = json!({"plan": "pro", "seats": 3}).as_object().unwrap().clone();
        let f = UserFilter {
            statuses: vec![UserStatus::Enabled],
            role_names: vec!["admin".into(), "x".into()],
            custom_attributes: json!({"plan": ["pro", "team"], "seats": 3}).as_object().unwrap().clone(),
            ..Default::default()
        };
        assert!(f.matches(&u));
        let f2 = UserFilter { statuses: vec![UserStatus::Disabled], ..f.clone() };
        assert!(!f2.matches(&u));
        let f3 = UserFilter { text: Some(u.id.as_str()[3..9].to_lowercase()), ..f };
        assert!(f3.matches(&u));
    }

    #[test]
    fn unknown_filter_keys_are_rejected() {
        assert!(serde_json::from_value::<UserFilter>(json!({"nope": 1})).is_err());
        let f: UserFilter = serde_json::from_value(json!({"statuses": ["enabled"], "tenant_ids": ["T1"]})).unwrap();
        assert_eq!(f.statuses, vec![UserStatus::Enabled]);
    }
}
