//! End-to-end tests of the service (one test binary; see `helpers::spawn_app`).

mod auth0;
mod bad_input;
mod bench;
mod cli;
mod exports;
mod helpers;
