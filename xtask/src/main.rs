//! `cargo xtask`: the lesson's pipelines as a DAG of stages, plus set-up,
//! data, inspection and benchmark commands. Every command and flag is in
//! [`flags`]; each command's `run` is in the module it drives.

mod bench;
mod bench_annotations;
mod bench_loader;
mod bench_memory;
mod bench_predict;
mod bench_train;
mod cache;
mod data;
mod download;
mod flags;
mod pipelines;
mod predict;
mod pyenv;
mod show;
mod stages;
mod test;
mod torch;

use clap::Parser;
use flags::Cmd;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log written to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
    let result = match flags::Cli::parse().command {
        Cmd::Pipeline(cmd) => cmd.run(),
        Cmd::Stage(cmd) => cmd.run(),
        Cmd::Dag(cmd) => cmd.run(),
        Cmd::Data(cmd) => cmd.run(),
        Cmd::Show(cmd) => cmd.run(),
        Cmd::ShowImage(cmd) => cmd.run(),
        Cmd::Predict(args) => predict::run(&args),
        Cmd::Setup => torch::setup(),
        Cmd::Weights(cmd) => cmd.run(),
        Cmd::Test(cmd) => cmd.run(),
        Cmd::TorchEnv => torch::print_env(),
        Cmd::Bench(cmd) => cmd.run(),
        Cmd::PeerSetup => pyenv::print_peer_python(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
