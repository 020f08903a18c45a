//! `userexport`: see `userexport --help`.

use clap::Parser;
use userexport::cli::{Cli, Command, KeysCommand, ProjectCommand, TokenCommand, UsersCommand};
use userexport::{app, bench, commands, telemetry};

/// Makes glibc serve every allocation of 1 MiB or more (the 8 MiB upload part buffers) with its own
/// mapping, returned to the system when freed.
///
/// By default glibc raises this threshold to the size of the largest mapped block freed so far, after
/// which part buffers come from the heap arenas and stay there when freed: a worker's RSS then crept
/// from ~50 to ~80 MiB over a few large exports instead of staying flat.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_mmap_threshold() {
    // SAFETY: `mallopt` only changes allocator tuning; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_mmap_threshold() {}

fn main() -> std::process::ExitCode {
    pin_mmap_threshold();
    let cli = Cli::parse();
    let settings = match cli.config.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log, settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Up), settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: userexport::config::Settings) -> anyhow::Result<()> {
    match command {
        Command::Up => app::up(settings).await,
        Command::Serve => app::serve(settings).await,
        Command::Worker(args) => app::worker(settings, args.concurrency).await,
        Command::Bench(args) => bench::run(&settings, &args).await,
        Command::Migrate => {
            app::build(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        other => {
            let c = app::build(&settings).await?;
            match other {
                Command::Project(ProjectCommand::Create { name, json }) => {
                    commands::project_create(&c.store, &name, json).await
                }
                Command::Project(ProjectCommand::List { json }) => commands::project_list(&c.store, json).await,
                Command::Users(UsersCommand::Seed { project, count, seed, offset, json }) => {
                    commands::users_seed(&c.store, &project, count, seed, offset, json).await
                }
                Command::Keys(KeysCommand::Create { project, out, json }) => {
                    commands::keys_create(&c.store, &project, &out, json).await
                }
                Command::Token(TokenCommand::Mint { project, ttl, key, kid, json }) => {
                    commands::token_mint(
                        &c.store,
                        &settings.data_dir,
                        &project,
                        ttl,
                        key.as_deref(),
                        kid.as_deref(),
                        json,
                    )
                    .await
                }
                Command::Export(args) => commands::export(&c.store, &args).await,
                Command::Up | Command::Serve | Command::Worker(_) | Command::Migrate | Command::Bench(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}
