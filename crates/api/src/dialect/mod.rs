//! The wire dialects. Each module parses its own request shapes, calls [`crate::service`] and renders
//! its own task view; none holds export logic.
//!
//! - [`native`] serves `/v1/exports`.
//! - [`authgear`] serves `/_api/admin/users/export`.
//! - [`auth0`] serves `/api/v2/jobs/…` and `/oauth/token`.
//! - [`descope`] serves `/v1|v2/mgmt/user…` (search, load, writes) and `/v1/mgmt/license`.

pub mod auth0;
pub mod authgear;
pub mod descope;
pub mod native;

use std::time::Duration;

/// A stored download URL is handed out only while it stays valid at least this long; otherwise a
/// fresh one is presigned.
pub const MIN_URL_VALIDITY: Duration = Duration::from_secs(300);
