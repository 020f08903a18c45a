//! Descope's management user API (compat-apis.md §3): search, load and the writes that fill a project.
//!
//! - `POST /v1|v2/mgmt/user/search` (and `/search/test`) → `{"users": [...], "total": N}`
//! - `GET /v1/mgmt/user?loginId=…|userId=…` → `{"user": {...}}`, 404 `E112102`
//! - `POST /v1/mgmt/users/load` → `{"users": [...], "total": N}`
//! - `POST /v1/mgmt/user/create` (`/create/test`), `/create/batch` (all or nothing)
//! - `POST /v1/mgmt/user/update/status`, `/v1/mgmt/user/update/role/set`, `/v2/mgmt/user/update/role/add`,
//!   `/v1/mgmt/user/update/role/remove` → `{"user": {...}}`
//! - `GET /v1/mgmt/license` → `{"rateLimitTier": …}` (the SDKs' start-up call)
//!
//! Requests are read the way Descope's protojson gateway reads them: unknown keys are ignored; `0`,
//! `""`, `null`, `false` and `[]` mean "unset"; int64 values may be numbers or numeric strings; proto
//! (`snake_case`) names are accepted beside JSON (`camelCase`) names. A filter Descope has and we do
//! not (e.g. `tenantRoleNames`) is refused with a 400 when set, never silently ignored. Search is
//! numbered pages on keyset cursors ([`Store::search_users`](userexport_store::Store::search_users)).

use std::collections::HashSet;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use serde_json::{Map, Value, json};
use userexport_domain::user::Authenticators;
use userexport_domain::{
    Code, SortField, TestUsers, User, UserFilter, UserId, UserSort, UserStatus, UserTenant, filter::MAX_FILTER_VALUES,
};
use userexport_store::StoreError;

use crate::AppState;
use crate::auth::Authenticated;
use crate::body;
use crate::error::{ApiDialect, ApiError};
use crate::routes::Routes;

const DIALECT: ApiDialect = ApiDialect::Descope;

/// Page size when `limit` is unset (Descope's default).
pub const DEFAULT_LIMIT: u64 = 100;

/// Largest accepted page size.
pub const MAX_LIMIT: u64 = 10_000;

/// Most users one batch create may carry.
pub const MAX_BATCH: usize = 10_000;

/// The rate-limit tier `GET /v1/mgmt/license` reports.
pub const LICENSE_TIER: &str = "userexport";

/// Registers the Descope routes.
pub fn configure(routes: &mut Routes<'_>) {
    routes
        .post("/v1/mgmt/user/search", search_users)
        .post("/v2/mgmt/user/search", search_users)
        .post("/v1/mgmt/user/search/test", search_test_users)
        .post("/v2/mgmt/user/search/test", search_test_users)
        .get("/v1/mgmt/user", load)
        .post("/v1/mgmt/users/load", load_users)
        .post("/v1/mgmt/user/create", create_user)
        .post("/v1/mgmt/user/create/test", create_test_user)
        .post("/v1/mgmt/user/create/batch", create_batch)
        .post("/v1/mgmt/user/update/status", update_status)
        .post("/v1/mgmt/user/update/role/set", set_roles)
        .post("/v2/mgmt/user/update/role/add", add_roles)
        .post("/v1/mgmt/user/update/role/remove", remove_roles)
        .get("/v1/mgmt/license", license);
}

/// Declares a route handler that forwards to a shared one with a fixed last argument.
macro_rules! forward {
    ($($name:ident => $target:ident($arg:expr);)+) => {$(
        async fn $name(
            state: web::Data<AppState>,
            auth: Authenticated,
            req: HttpRequest,
            payload: web::Payload,
        ) -> Result<HttpResponse, ApiError> {
            $target(state, auth, req, payload, $arg).await
        }
    )+};
}

forward! {
    search_users => search(false);
    search_test_users => search(true);
    create_user => create(false);
    create_test_user => create(true);
    update_status => update(Update::Status);
    set_roles => update(Update::SetRoles);
    add_roles => update(Update::AddRoles);
    remove_roles => update(Update::RemoveRoles);
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::with_message(DIALECT, Code::InvalidRequestBody, message)
}

fn missing(message: impl Into<String>) -> ApiError {
    ApiError::with_message(DIALECT, Code::MissingArgument, message)
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::from_coded(DIALECT, e)
}

/// Authentication is done by the extractor; this adds the per-project rate limit.
fn admit(state: &AppState, auth: &Authenticated) -> Result<(), ApiError> {
    match &state.settings.rate_limit {
        Some(limit) => limit.check(DIALECT, &auth.project.id),
        None => Ok(()),
    }
}

/// The rate limit, then the JSON object body.
async fn admitted_body(
    state: &AppState,
    auth: &Authenticated,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Map<String, Value>, ApiError> {
    admit(state, auth)?;
    let value = body::read_json(req, payload, state.settings.max_body_bytes).await?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::with_message(
            DIALECT,
            Code::MalformedJson,
            format!("the request body must be a JSON object, not {}", body::json_type(&other)),
        )),
    }
}

/// A request object read with protojson's tolerance (see the module docs).
struct Proto<'a> {
    obj: &'a Map<String, Value>,
    at: String,
}

/// `loginIds` → `login_ids`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether protojson treats `v` as unset.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

impl<'a> Proto<'a> {
    fn new(obj: &'a Map<String, Value>, at: impl Into<String>) -> Self {
        Self { obj, at: at.into() }
    }

    /// The set value of `name` (JSON or proto spelling), `None` when absent or unset.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).or_else(|| self.obj.get(&snake(name))).filter(|v| !is_unset(v))
    }

    fn loc(&self, name: &str) -> String {
        format!("{}/{name}", self.at)
    }

    fn type_error(&self, name: &str, expected: &str) -> ApiError {
        invalid(format!("{}: expected {expected}", self.loc(name)))
    }

    fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.type_error(name, "a string")),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.type_error(name, "a boolean")),
        }
    }

    /// An explicit boolean (`false` included), for writes.
    fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.obj.get(name).or_else(|| self.obj.get(&snake(name))) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.type_error(name, "a boolean")),
        }
    }

    /// An int64 given as a JSON number or a numeric string.
    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| self.type_error(name, "an integer")),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| self.type_error(name, "an integer")),
            Some(_) => Err(self.type_error(name, "an integer")),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let Some(v) = self.get(name) else { return Ok(Vec::new()) };
        let Value::Array(items) = v else { return Err(self.type_error(name, "an array of strings")) };
        if items.len() > MAX_FILTER_VALUES {
            return Err(invalid(format!("{}: at most {MAX_FILTER_VALUES} values", self.loc(name))));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(invalid(format!("{}/{i}: expected a string", self.loc(name)))),
            })
            .collect()
    }

    fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(self.type_error(name, "an object")),
        }
    }
}

/// Unix milliseconds → time.
fn millis(p: &Proto<'_>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match p.int(name)? {
        None => Ok(None),
        Some(ms) => Utc
            .timestamp_millis_opt(ms)
            .single()
            .map(Some)
            .ok_or_else(|| invalid(format!("{}: out of range", p.loc(name)))),
    }
}

/// Descope filters we do not implement: refused when set, so nobody gets unfiltered results.
const UNSUPPORTED_FILTERS: [&str; 17] = [
    "recoveryEmails",
    "recoveryPhones",
    "verifiedEmail",
    "verifiedPhone",
    "verifiedRecoveryEmail",
    "verifiedRecoveryPhone",
    "tenantRoleIds",
    "tenantRoleNames",
    "scimOnly",
    "password",
    "totp",
    "webauthn",
    "scim",
    "familyIds",
    "dependent",
    "lockReasons",
    "tempLockReasons",
];

/// A parsed search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// What to match.
    pub filter: UserFilter,
    /// Order (insertion order after these keys).
    pub sort: Vec<UserSort>,
    /// First match to return.
    pub offset: u64,
    /// Page size.
    pub limit: u64,
}

fn parse_statuses(p: &Proto<'_>) -> Result<Vec<UserStatus>, ApiError> {
    p.strings("statuses")?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse().map_err(|_| {
                invalid(format!("{}/statuses/{i}: unknown status {s:?} (enabled, disabled, invited, expired)", p.at))
            })
        })
        .collect()
}

fn parse_sort(p: &Proto<'_>) -> Result<Vec<UserSort>, ApiError> {
    let Some(v) = p.get("sort") else { return Ok(Vec::new()) };
    let Value::Array(items) = v else { return Err(p.type_error("sort", "an array")) };
    let mut sort = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(obj) = item else { return Err(invalid(format!("/sort/{i}: expected an object"))) };
        let q = Proto::new(obj, format!("/sort/{i}"));
        let name = q.string("field")?.ok_or_else(|| missing(format!("/sort/{i}/field is required")))?;
        let field = SortField::from_descope(&name).ok_or_else(|| {
            let known: Vec<&str> = SortField::ALL.iter().map(|f| f.descope_name()).collect();
            invalid(format!("/sort/{i}/field: cannot sort by {name:?} (one of {})", known.join(", ")))
        })?;
        if seen.insert(field) {
            sort.push(UserSort { field, desc: q.bool("desc")? });
        }
    }
    Ok(sort)
}

/// Parses a search body; `test_path` is the `/search/test` route (test users only).
pub fn parse_search(obj: &Map<String, Value>, test_path: bool) -> Result<SearchRequest, ApiError> {
    let p = Proto::new(obj, "");
    if let Some(name) = UNSUPPORTED_FILTERS.iter().find(|n| p.get(n).is_some()) {
        return Err(invalid(format!("/{name}: this filter is not supported by userexport")));
    }
    let mut login_ids = p.strings("loginIds")?;
    if let Some(one) = p.string("loginId")? {
        login_ids.push(one);
    }
    let test_users = if test_path || p.bool("testUsersOnly")? {
        TestUsers::Only
    } else if p.bool("withTestUser")? {
        TestUsers::Include
    } else {
        TestUsers::Exclude
    };
    let custom_attributes = p.object("customAttributes")?.cloned().unwrap_or_default();
    if custom_attributes.len() > MAX_FILTER_VALUES {
        return Err(invalid(format!("/customAttributes: at most {MAX_FILTER_VALUES} attributes")));
    }
    let filter = UserFilter {
        user_ids: p.strings("userIds")?,
        login_ids,
        emails: p.strings("emails")?,
        phones: p.strings("phones")?,
        tenant_ids: p.strings("tenantIds")?,
        role_names: p.strings("roleNames")?,
        statuses: parse_statuses(&p)?,
        sso_app_ids: p.strings("ssoAppIds")?,
        text: p.string("text")?,
        custom_attributes,
        created_from: millis(&p, "fromCreatedTime")?,
        created_to: millis(&p, "toCreatedTime")?,
        modified_from: millis(&p, "fromModifiedTime")?,
        modified_to: millis(&p, "toModifiedTime")?,
        sso_only: p.bool("ssoOnly")?,
        test_users,
    };
    let non_negative = |name: &str| -> Result<u64, ApiError> {
        match p.int(name)? {
            None => Ok(0),
            Some(n) => u64::try_from(n).map_err(|_| invalid(format!("/{name}: must not be negative"))),
        }
    };
    let limit = match non_negative("limit")? {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => return Err(invalid(format!("/limit: at most {MAX_LIMIT}"))),
        n => n,
    };
    let page = non_negative("page")?;
    let offset = match non_negative("offset")? {
        0 => page.checked_mul(limit).ok_or_else(|| invalid("/page: too large"))?,
        n => n,
    };
    Ok(SearchRequest { filter, sort: parse_sort(&p)?, offset, limit })
}

fn users_json(users: &[User]) -> Vec<Value> {
    users.iter().map(User::descope_user).collect()
}

async fn search(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
    test_path: bool,
) -> Result<HttpResponse, ApiError> {
    let obj = admitted_body(&state, &auth, &req, payload).await?;
    let q = parse_search(&obj, test_path)?;
    let page =
        state.store.search_users(&auth.project.id, &q.filter, &q.sort, q.offset, q.limit).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({ "users": users_json(&page.users), "total": page.total })))
}

async fn load_users(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let obj = admitted_body(&state, &auth, &req, payload).await?;
    let p = Proto::new(&obj, "");
    let ids = p.strings("userIds")?;
    if ids.is_empty() {
        return Err(missing("at least one user id needs to be supplied in userIds"));
    }
    let filter = UserFilter { user_ids: ids, test_users: TestUsers::Include, ..Default::default() };
    let limit = filter.user_ids.len() as u64;
    let page = state.store.search_users(&auth.project.id, &filter, &[], 0, limit).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({ "users": users_json(&page.users), "total": page.total })))
}

/// `GET /v1/mgmt/user` query: empty values count as absent (the Go SDK sends `userId=`).
#[derive(Debug, Default, serde::Deserialize)]
struct LoadQuery {
    #[serde(default, rename = "loginId")]
    login_id: Option<String>,
    #[serde(default, rename = "userId")]
    user_id: Option<String>,
}

async fn load(state: web::Data<AppState>, auth: Authenticated, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    admit(&state, &auth)?;
    let q = web::Query::<LoadQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::with_message(DIALECT, Code::InvalidQuery, format!("invalid query string: {e}")))?
        .into_inner();
    let project = &auth.project.id;
    let store = &state.store;
    let by_user_id = |id: String| async move {
        match UserId::parse(&id) {
            Ok(id) => store.get_user(project, &id).await,
            Err(_) => Ok(None),
        }
    };
    let user = match (q.login_id.filter(|s| !s.is_empty()), q.user_id.filter(|s| !s.is_empty())) {
        // The Go and Node SDKs send user ids as `loginId` too.
        (Some(login_id), _) => match store.find_user_by_login_id(project, &login_id).await.map_err(store_error)? {
            Some(u) => Some(u),
            None => by_user_id(login_id).await.map_err(store_error)?,
        },
        (None, Some(user_id)) => by_user_id(user_id).await.map_err(store_error)?,
        (None, None) => return Err(missing("either loginId or userId is required")),
    };
    match user {
        Some(u) => Ok(HttpResponse::Ok().json(json!({ "user": u.descope_user() }))),
        None => Err(ApiError::with_message(DIALECT, Code::UserNotFound, "User not found")),
    }
}

fn check_email(at: &str, email: &str) -> Result<(), ApiError> {
    let ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !email.chars().any(char::is_whitespace)
    });
    if ok { Ok(()) } else { Err(invalid(format!("{at}: {email:?} is not an email address"))) }
}

fn check_phone(at: &str, phone: &str) -> Result<(), ApiError> {
    let digits = phone.strip_prefix('+').unwrap_or_default();
    if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(format!("{at}: {phone:?} is not an E.164 phone number (+ and 6 to 15 digits)")))
    }
}

fn parse_tenants(p: &Proto<'_>) -> Result<Vec<UserTenant>, ApiError> {
    let Some(v) = p.get("userTenants") else { return Ok(Vec::new()) };
    let Value::Array(items) = v else { return Err(p.type_error("userTenants", "an array")) };
    let mut seen = HashSet::new();
    let mut tenants = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = p.loc(&format!("userTenants/{i}"));
        let Value::Object(obj) = item else { return Err(invalid(format!("{at}: expected an object"))) };
        let t = Proto::new(obj, at.clone());
        let tenant_id = t.string("tenantId")?.ok_or_else(|| missing(format!("{at}/tenantId is required")))?;
        if !seen.insert(tenant_id.clone()) {
            return Err(invalid(format!("{at}/tenantId: tenant {tenant_id:?} is listed twice")));
        }
        tenants.push(UserTenant {
            tenant_name: t.string("tenantName")?.unwrap_or_else(|| tenant_id.clone()),
            tenant_id,
            role_names: t.strings("roleNames")?,
        });
    }
    Ok(tenants)
}

/// Builds a new user from a Descope create body (also one item of a batch) at `at`.
pub fn parse_new_user(obj: &Map<String, Value>, at: &str, test: bool, now: DateTime<Utc>) -> Result<User, ApiError> {
    let p = Proto::new(obj, at);
    let login_id = p.string("loginId")?.ok_or_else(|| missing(format!("{at}/loginId is required")))?;
    let mut login_ids = vec![login_id];
    for extra in p.strings("additionalLoginIds")? {
        if login_ids.contains(&extra) {
            return Err(invalid(format!("{at}/additionalLoginIds: {extra:?} is listed twice")));
        }
        login_ids.push(extra);
    }
    let email = p.string("email")?;
    if let Some(e) = &email {
        check_email(&p.loc("email"), e)?;
    }
    let phone = p.string("phone")?;
    if let Some(ph) = &phone {
        check_phone(&p.loc("phone"), ph)?;
    }
    let status = match p.string("status")? {
        Some(s) => s.parse().map_err(|_| {
            invalid(format!("{}: unknown status {s:?} (enabled, disabled, invited, expired)", p.loc("status")))
        })?,
        None if p.bool("invite")? => UserStatus::Invited,
        None => UserStatus::Enabled,
    };
    let mut sso_app_ids = p.strings("ssoAppIds")?;
    if sso_app_ids.is_empty() {
        // The Python SDK spells it `ssoAppIDs`.
        sso_app_ids = p.strings("ssoAppIDs")?;
    }
    let password = p.get("password").is_some() || p.get("hashedPassword").is_some();
    let now = now.trunc_subsecs(6);
    Ok(User {
        id: UserId::generate(),
        login_ids,
        username: None,
        email,
        email_verified: p.opt_bool("verifiedEmail")?.unwrap_or(false),
        phone,
        phone_verified: p.opt_bool("verifiedPhone")?.unwrap_or(false),
        name: p.string("displayName")?.or(p.string("name")?),
        given_name: p.string("givenName")?,
        middle_name: p.string("middleName")?,
        family_name: p.string("familyName")?,
        nickname: None,
        picture: p.string("picture")?,
        gender: None,
        birthdate: None,
        zoneinfo: None,
        locale: None,
        website: None,
        profile: None,
        address: None,
        status,
        test: test || p.bool("test")?,
        roles: p.strings("roleNames")?,
        tenants: parse_tenants(&p)?,
        custom_attributes: p.object("customAttributes")?.cloned().unwrap_or_default(),
        sso_app_ids,
        // A password is recorded as present, never stored.
        authenticators: Authenticators { password, ..Default::default() },
        created_at: now,
        updated_at: now,
        last_login_at: None,
        logins_count: 0,
    })
}

fn duplicate(e: StoreError) -> ApiError {
    match e {
        StoreError::Duplicate(which) => ApiError::with_message(
            DIALECT,
            Code::DuplicateUser,
            format!("a user with login id or user id {which:?} already exists"),
        ),
        other => store_error(other),
    }
}

async fn create(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
    test: bool,
) -> Result<HttpResponse, ApiError> {
    let obj = admitted_body(&state, &auth, &req, payload).await?;
    let user = parse_new_user(&obj, "", test, Utc::now())?;
    state.store.insert_users(&auth.project.id, std::slice::from_ref(&user)).await.map_err(duplicate)?;
    Ok(HttpResponse::Ok().json(json!({ "user": user.descope_user() })))
}

async fn create_batch(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let obj = admitted_body(&state, &auth, &req, payload).await?;
    let Some(Value::Array(items)) = obj.get("users") else {
        return Err(missing("/users is required: an array of users"));
    };
    if items.is_empty() {
        return Err(missing("/users must hold at least one user"));
    }
    if items.len() > MAX_BATCH {
        return Err(invalid(format!("/users: at most {MAX_BATCH} users per batch")));
    }
    let invite = Proto::new(&obj, "").bool("invite")?;
    let now = Utc::now();
    let mut users = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("/users/{i}");
        let Value::Object(u) = item else { return Err(invalid(format!("{at}: expected an object"))) };
        let mut user = parse_new_user(u, &at, false, now)?;
        if invite && Proto::new(u, "").get("status").is_none() {
            user.status = UserStatus::Invited;
        }
        users.push(user);
    }
    state.store.insert_users(&auth.project.id, &users).await.map_err(duplicate)?;
    Ok(HttpResponse::Ok().json(json!({ "createdUsers": users_json(&users), "failedUsers": [] })))
}

/// The single-user updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Update {
    Status,
    SetRoles,
    AddRoles,
    RemoveRoles,
}

async fn update(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
    kind: Update,
) -> Result<HttpResponse, ApiError> {
    let obj = admitted_body(&state, &auth, &req, payload).await?;
    let p = Proto::new(&obj, "");
    let login_id = p.string("loginId")?.ok_or_else(|| missing("/loginId is required"))?;
    let tenant_id = p.string("tenantId")?;
    let status =
        match kind {
            Update::Status => {
                let s = p.string("status")?.ok_or_else(|| missing("/status is required"))?;
                Some(s.parse::<UserStatus>().map_err(|_| {
                    invalid(format!("/status: unknown status {s:?} (enabled, disabled, invited, expired)"))
                })?)
            }
            _ => None,
        };
    let roles = p.strings("roleNames")?;
    let mut outcome = Ok(());
    let updated = state
        .store
        .update_user(&auth.project.id, &login_id, |u| {
            if let Some(status) = status {
                u.status = status;
                return;
            }
            let list = match &tenant_id {
                None => &mut u.roles,
                Some(t) => match u.tenants.iter_mut().find(|x| &x.tenant_id == t) {
                    Some(tenant) => &mut tenant.role_names,
                    None => {
                        outcome = Err(invalid(format!("/tenantId: the user is not a member of tenant {t:?}")));
                        return;
                    }
                },
            };
            match kind {
                Update::SetRoles => *list = roles.clone(),
                Update::AddRoles => {
                    list.extend(roles.iter().filter(|r| !list.contains(r)).cloned().collect::<Vec<_>>())
                }
                Update::RemoveRoles => list.retain(|r| !roles.contains(r)),
                Update::Status => {}
            }
        })
        .await
        .map_err(store_error)?;
    outcome?;
    match updated {
        Some(u) => Ok(HttpResponse::Ok().json(json!({ "user": u.descope_user() }))),
        None => Err(ApiError::with_message(DIALECT, Code::UserNotFound, "User not found")),
    }
}

async fn license(state: web::Data<AppState>, auth: Authenticated) -> Result<HttpResponse, ApiError> {
    admit(&state, &auth)?;
    Ok(HttpResponse::Ok().json(json!({ "rateLimitTier": LICENSE_TIER })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn empty_and_python_defaults_mean_all_real_users() {
        let python = json!({"tenantIds": [], "roleNames": [], "limit": 0, "page": 0, "testUsersOnly": false,
            "withTestUser": false});
        for body in [json!({}), python] {
            let q = parse_search(&obj(body), false).unwrap();
            assert_eq!(q.filter, UserFilter::default());
            assert_eq!((q.offset, q.limit), (0, DEFAULT_LIMIT));
            assert!(q.sort.is_empty());
        }
    }

    #[test]
    fn go_style_zero_values_and_proto_names_are_tolerated() {
        let q = parse_search(
            &obj(json!({"sort": null, "fromCreatedTime": 0, "login_ids": ["a"], "limit": "50", "page": "2",
                "text": "", "statuses": ["disabled"], "unknownKey": {"x": 1}})),
            false,
        )
        .unwrap();
        assert_eq!(q.filter.login_ids, ["a"]);
        assert_eq!(q.filter.statuses, [UserStatus::Disabled]);
        assert_eq!(q.filter.created_from, None);
        assert_eq!((q.offset, q.limit), (100, 50));
    }

    #[test]
    fn filters_times_and_sort() {
        let q = parse_search(
            &obj(json!({"fromCreatedTime": 1_700_000_000_123i64, "toModifiedTime": "1700000000999",
                "withTestUser": true, "sort": [{"field": "email", "desc": true}, {"field": "createdTime"}],
                "customAttributes": {"plan": ["pro"]}, "offset": 7, "page": 3})),
            false,
        )
        .unwrap();
        assert_eq!(q.filter.created_from.unwrap().timestamp_millis(), 1_700_000_000_123);
        assert_eq!(q.filter.modified_to.unwrap().timestamp_millis(), 1_700_000_000_999);
        assert_eq!(q.filter.test_users, TestUsers::Include);
        assert_eq!(
            q.sort,
            [UserSort { field: SortField::Email, desc: true }, UserSort { field: SortField::CreatedTime, desc: false }]
        );
        assert_eq!(q.offset, 7, "a positive offset wins over page");
        let test = parse_search(&obj(json!({"withTestUser": true})), true).unwrap();
        assert_eq!(test.filter.test_users, TestUsers::Only);
    }

    #[test]
    fn bad_search_input_is_a_clear_400() {
        for (body, needle) in [
            (json!({"limit": -1}), "/limit"),
            (json!({"page": -2}), "/page"),
            (json!({"limit": 10_001}), "/limit"),
            (json!({"statuses": ["zombie"]}), "/statuses/0"),
            (json!({"sort": [{"field": "tenant"}]}), "/sort/0/field"),
            (json!({"sort": [{"desc": true}]}), "/sort/0/field"),
            (json!({"tenantRoleNames": {"t": {"values": ["r"]}}}), "/tenantRoleNames"),
            (json!({"emails": "a@b.c"}), "/emails"),
            (json!({"emails": [1]}), "/emails/0"),
            (json!({"fromCreatedTime": "yesterday"}), "/fromCreatedTime"),
            (json!({"fromCreatedTime": 9_000_000_000_000_000i64}), "/fromCreatedTime"),
            (json!({"page": 9_000_000_000_000_000i64, "limit": 10_000}), "/page"),
        ] {
            let err = parse_search(&obj(body.clone()), false).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body}");
            assert!(err.message.contains(needle), "{body}: {}", err.message);
            assert!(err.body()["errorCode"].as_str().unwrap().starts_with("E01100"), "{body}");
        }
    }

    #[test]
    fn new_users_are_validated() {
        let now = Utc::now();
        let u = parse_new_user(
            &obj(json!({"loginId": "ann@x.io", "email": "ann@x.io", "phone": "+15551234567", "displayName": "Ann",
                "roleNames": ["admin"], "userTenants": [{"tenantId": "T1", "roleNames": ["viewer"]}],
                "customAttributes": {"plan": "pro"}, "verifiedEmail": true, "additionalLoginIds": ["ann"],
                "ssoAppIDs": ["app1"], "status": "disabled", "password": "secret"})),
            "",
            false,
            now,
        )
        .unwrap();
        assert_eq!(u.login_ids, ["ann@x.io", "ann"]);
        assert_eq!(u.name.as_deref(), Some("Ann"));
        assert_eq!(u.tenants[0].role_names, ["viewer"]);
        assert_eq!(u.sso_app_ids, ["app1"]);
        assert_eq!(u.status, UserStatus::Disabled);
        assert!(u.email_verified && u.authenticators.password);
        let view = u.descope_user();
        assert!(!view.to_string().contains("secret"), "a password never reaches the user object");

        for (body, code) in [
            (json!({}), "E011002"),
            (json!({"loginId": ""}), "E011002"),
            (json!({"loginId": "a", "email": "nope"}), "E011003"),
            (json!({"loginId": "a", "phone": "555"}), "E011003"),
            (json!({"loginId": "a", "status": "zombie"}), "E011003"),
            (json!({"loginId": "a", "additionalLoginIds": ["a"]}), "E011003"),
            (json!({"loginId": "a", "userTenants": [{"roleNames": ["r"]}]}), "E011002"),
            (json!({"loginId": 5}), "E011003"),
        ] {
            let err = parse_new_user(&obj(body.clone()), "", false, now).unwrap_err();
            assert_eq!(err.body()["errorCode"], code, "{body}: {}", err.message);
        }
    }
}
