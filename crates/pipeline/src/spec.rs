//! What the runner hands a stage: one type, written by the runner and read by the
//! trainer's binary as JSON.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::StageKind;

/// A stage may leave one line in `<work_dir>/note.txt` (e.g. how many images it
/// skipped as unreadable); the runner shows it in the stage's summary line and in
/// report.html.
pub const NOTE_FILE: &str = "note.txt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSpec {
    pub name: String,
    pub kind: StageKind,
    #[serde(default)]
    pub inputs: BTreeMap<String, PathBuf>,
    /// Staging paths: the runner renames them into place after the stage succeeds.
    #[serde(default)]
    pub outputs: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub params: serde_json::Value,
    /// Persists between runs of this stage (resume checkpoints).
    pub work_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The runner's fingerprint of the stage (input contents, params and code): a
    /// checkpoint left in `work_dir` by a run with another fingerprint is not resumed.
    #[serde(default)]
    pub fingerprint: String,
}

/// A stage asked for an input or output its pipeline file does not give it, or its
/// params do not deserialise.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("stage {stage} ({kind}) needs an {what} named {name:?}")]
    Missing {
        stage: String,
        kind: StageKind,
        what: &'static str,
        name: String,
    },
    #[error("stage {stage}: params: {source}")]
    Params {
        stage: String,
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
}

impl StageSpec {
    /// Leaves the stage's note for the runner (see [`NOTE_FILE`]).
    pub fn note(&self, line: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.work_dir)?;
        std::fs::write(self.work_dir.join(NOTE_FILE), line)
    }

    pub fn input(&self, name: &str) -> Result<&Path, SpecError> {
        self.find(&self.inputs, "input", name)
    }

    pub fn output(&self, name: &str) -> Result<&Path, SpecError> {
        self.find(&self.outputs, "output", name)
    }

    /// The params as the kind's type (see [`crate::params`]).
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, SpecError> {
        serde_path_to_error::deserialize(&self.params).map_err(|source| SpecError::Params {
            stage: self.name.clone(),
            source,
        })
    }

    fn find<'a>(
        &self,
        paths: &'a BTreeMap<String, PathBuf>,
        what: &'static str,
        name: &str,
    ) -> Result<&'a Path, SpecError> {
        paths
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| SpecError::Missing {
                stage: self.name.clone(),
                kind: self.kind,
                what,
                name: name.into(),
            })
    }
}
