//! `cargo xtask`: the lesson's pipelines as a DAG of stages, plus set-up,
//! data, inspection and benchmark commands.

mod cache;
mod pyenv;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fast.ai lesson 8 (object detection) as pipelines of stages")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the Python peers used by the benchmarks.
    PeerSetup,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match Cli::parse().command {
        Cmd::PeerSetup => {
            let python = pyenv::peer_python()?;
            println!("{}", python.display());
        }
    }
    Ok(())
}
