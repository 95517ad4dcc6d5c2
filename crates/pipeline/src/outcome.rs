//! What became of a stage in one run, as the runner records it and the report
//! shows it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Ran,
    /// Up to date: its outputs were reused.
    Skipped,
    Failed,
    /// Not run this time: not selected, or an earlier stage failed.
    NeverRun,
}

impl StageState {
    pub fn label(self) -> &'static str {
        match self {
            StageState::Ran => "ran",
            StageState::Skipped => "skipped",
            StageState::Failed => "failed",
            StageState::NeverRun => "never run",
        }
    }
}

impl std::fmt::Display for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// `1.23 GB`, `456 MB`: a stage's peak memory as a person reads it.
pub fn format_bytes(bytes: u64) -> String {
    let gb = bytes as f64 / 1e9;
    if gb >= 1.0 {
        format!("{gb:.2} GB")
    } else {
        format!("{:.0} MB", bytes as f64 / 1e6)
    }
}
