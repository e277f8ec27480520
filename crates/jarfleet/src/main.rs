//! `jarfleet`: one binary that is the daemon, every client command, and the instance shim.

mod args;
mod commands;
mod context;
mod install;
mod pack;
mod render;
mod sign;
mod up;

use clap::Parser;
use jarfleet_api::Action;

use crate::args::{Cli, Command};
use crate::context::CliError;

fn main() {
    // The shim is a small, long-lived process, one per JVM: it skips the CLI parser, the async
    // runtime and tracing, so it touches as little memory as possible.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == "shim")
        && let (Some(run_dir), None) = (argv.next(), argv.next())
    {
        if let Err(e) = jarfleet_daemon::shim::run_shim(std::path::Path::new(&run_dir)) {
            eprintln!("jarfleet shim: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let cli = Cli::parse();
    init_tracing(&cli.command);
    // One thread runs the daemon's loop, API, probes and shim connections: nothing there is
    // CPU-bound, and one thread means no cross-thread wake-ups (idle CPU is a benchmark goal).
    // Blocking work (jar hashing, log files, the store readers) goes to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        e.print();
        std::process::exit(e.code);
    }
}

fn init_tracing(command: &Command) {
    let default = match command {
        Command::Daemon => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JARFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .try_init();
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let state = cli.state_dir.as_deref();
    let client = || context::client(state, None);
    match cli.command {
        Command::Up {
            spec,
            detach,
            wait,
            watch,
            prefix: None,
            ..
        } => up::up(state, spec.as_deref(), detach, wait, watch).await,
        Command::Up {
            spec: Some(_),
            prefix: Some(_),
            ..
        } => Err(context::CliError::usage(
            "give either a spec or --prefix",
            Some("`up --prefix DIR` installs this installer's bundle under DIR and runs it"),
        )),
        Command::Up {
            spec: None,
            detach,
            wait,
            watch,
            prefix: Some(prefix),
            trust,
        } => {
            install::run(install::InstallArgs {
                bundle: None,
                prefix: prefix.clone(),
                dry_run: false,
                trust,
                signature: None,
                start: false,
            })
            .await?;
            let spec = context::absolute(&prefix).join("jarfleet.toml");
            let state = context::absolute(&prefix).join("state");
            up::up(Some(&state), Some(&spec), detach, wait, watch).await
        }
        Command::Daemon => up::daemon(context::state_dir(state, None)).await,
        Command::Down => commands::down(&client()).await,
        Command::Apply {
            spec,
            dry_run,
            output,
        } => commands::apply(state, spec.as_deref(), dry_run, output).await,
        Command::Validate { spec, offline } => commands::validate(spec.as_deref(), offline).await,
        Command::Metrics => commands::metrics(&client()).await,
        Command::Status { app, output } => {
            commands::status(&client(), app.as_deref(), output).await
        }
        Command::Start { target } => commands::action(&client(), &target, Action::Start).await,
        Command::Stop { target } => commands::action(&client(), &target, Action::Stop).await,
        Command::Restart { target } => commands::action(&client(), &target, Action::Restart).await,
        Command::Deploy {
            app,
            artifact,
            version,
            wait,
            output,
        } => commands::deploy(&client(), &app, &artifact, version, wait, output).await,
        Command::Rollback {
            app,
            to,
            wait,
            output,
        } => commands::rollback(&client(), &app, to, wait, output).await,
        Command::Promote { app, wait, output } => {
            commands::canary(&client(), &app, true, wait, output).await
        }
        Command::Abort { app, wait, output } => {
            commands::canary(&client(), &app, false, wait, output).await
        }
        Command::History { app, output } => commands::history(&client(), &app, output).await,
        Command::Scale { app, instances } => commands::scale(&client(), &app, instances).await,
        Command::Logs {
            target,
            follow,
            lines,
            output,
        } => commands::logs(&client(), &target, follow, lines, output).await,
        Command::Events {
            follow,
            lines,
            output,
        } => commands::events(&client(), follow, lines, output).await,
        Command::Doctor { output } => {
            commands::doctor(&context::state_dir(state, None), output).await
        }
        Command::Pack {
            jar,
            version,
            name,
            config,
            hooks,
            jre,
            app_spec,
            java,
            out_dir,
            installer,
        } => pack::run(pack::PackArgs {
            jar,
            name,
            version,
            config,
            hooks,
            jre,
            app_spec,
            java,
            out_dir,
            installer,
        }),
        Command::Install {
            bundle,
            prefix,
            dry_run,
            trust,
            signature,
            no_start,
        } => {
            install::run(install::InstallArgs {
                bundle,
                prefix,
                dry_run,
                trust,
                signature,
                start: !no_start,
            })
            .await
        }
        Command::Keygen {
            out,
            no_password,
            password_file,
            force,
        } => sign::keygen(&out, no_password, password_file.as_deref(), force),
        Command::Sign {
            file,
            key,
            password_file,
            comment,
        } => sign::sign(&file, &key, password_file.as_deref(), comment.as_deref()),
        Command::Verify {
            file,
            keys,
            signature,
        } => sign::verify(&file, signature.as_deref(), &keys),
        Command::Shim { .. } => Ok(()),
    }
}
