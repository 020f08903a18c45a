//! sea-orm entities, one module per table. Internal: the public API speaks domain types, and
//! [`crate::convert`] maps between the two.

pub(crate) mod export_tasks;
pub(crate) mod idempotency_keys;
pub(crate) mod management_keys;
pub(crate) mod projects;
pub(crate) mod signing_keys;
pub(crate) mod user_login_ids;
pub(crate) mod user_search_cursors;
pub(crate) mod users;
