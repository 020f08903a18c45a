//! End-to-end tests of the service (one test binary; see `helpers::spawn_app`).

/// Runs each scenario (`async fn scenario(app: &TestApp)`) against a fresh app in each mode:
/// embedded (SQLite, SQLite queue, local files) and production (Postgres, Redis, s3s-fs).
macro_rules! in_both_modes {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use crate::helpers::{Mode, spawn_app};

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                let Some(app) = spawn_app(Mode::Embedded).await else { return };
                super::$scenario(&app).await;
                app.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn production() {
                let Some(app) = spawn_app(Mode::Production).await else { return };
                super::$scenario(&app).await;
                app.stop().await;
            }
        }
    )+};
}

mod auth0;
mod bad_input;
mod bench;
mod cli;
mod console;
mod descope;
mod exports;
mod helpers;
mod lifecycle;
mod ops;
