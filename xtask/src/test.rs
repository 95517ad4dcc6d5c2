//! `cargo xtask test`, the README's test command: every crate, the tch ones
//! included, with libtorch and (unless told not to) the Python peers that
//! parity tests use.

use anyhow::{bail, Result};

use crate::cache::project_root;
use crate::flags::TestCmd;
use crate::{pyenv, torch};

impl TestCmd {
    pub fn run(self) -> Result<()> {
        let libtorch = torch::ensure_libtorch()?;
        let mut cmd =
            std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(project_root())
            .args(["test", "--workspace"])
            .args(&self.cargo_args);
        cmd.envs(torch::cargo_env(&libtorch));
        if !self.no_peers {
            cmd.env("LESSON8_PEER_PYTHON", pyenv::peer_python()?);
        }
        eprintln!("running {cmd:?}");
        let status = cmd.status()?;
        if !status.success() {
            bail!("cargo test failed ({status})");
        }
        Ok(())
    }
}
