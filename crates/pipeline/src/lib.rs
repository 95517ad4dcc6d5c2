//! The contract between the pipeline runner (`cargo xtask`) and its stages, in one
//! place and without libtorch, so the runner and the trainer's binary share every
//! type:
//! - [`file`]: pipeline files (`pipelines/<name>.toml`), loaded into a checked DAG of
//!   [`Stage`]s; a bad file is refused before anything runs, naming its line.
//! - [`StageKind`]: every kind of stage, its params type, its code, where it runs.
//! - [`params`]: the typed params of each kind.
//! - [`StageSpec`]: what the runner hands a stage (JSON for the trainer's binary).
//! - [`StageState`]: what became of a stage in a run (the runner's record, the report's column).

pub mod file;
pub mod kind;
pub mod outcome;
pub mod params;
pub mod spec;

pub use file::{Pipeline, PipelineError, Stage, Vars};
pub use kind::{ParamsError, StageKind};
pub use outcome::{format_bytes, StageState};
pub use spec::{SpecError, StageSpec, NOTE_FILE};
