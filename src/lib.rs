//! The `userexport` binary's library half: CLI definition, configuration and process wiring.
//! `src/main.rs` only parses arguments and dispatches; integration tests reuse [`app`].

pub mod app;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod telemetry;
