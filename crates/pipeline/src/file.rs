//! Pipeline files (`pipelines/<name>.toml`): stages with named inputs, outputs
//! and params, ordered as a DAG by matching each stage's inputs to earlier
//! stages' outputs. Everything is checked when the file is loaded, before any
//! stage runs: syntax, kinds, names, placeholders, where outputs go, cycles, and
//! each stage's params against its kind's type; errors name the file and line.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::kind::{ParamsError, StageKind};

/// A pipeline file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    description: String,
    /// Params shared by every stage; a stage's own params override them.
    #[serde(default)]
    params: toml::Table,
    #[serde(rename = "stage")]
    stages: Vec<StageFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    name: String,
    kind: StageKind,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    #[serde(default)]
    params: toml::Table,
    /// Whether the stage takes the pipeline-level `[params]` (those its kind knows).
    #[serde(default = "yes")]
    shared_params: bool,
}

fn yes() -> bool {
    true
}

/// A pipeline file that cannot run, and why.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("reading pipeline {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing pipeline {}: {source}", file.display())]
    Syntax {
        file: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// `line` is 1-based; 0 when the problem is the file as a whole.
    #[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no pipeline {name:?}: {} does not exist (known: {known})", file.display())]
    Unknown {
        name: String,
        file: PathBuf,
        known: String,
    },
}

/// Values substituted into `{name}` placeholders of input and output paths.
#[derive(Debug, Clone)]
pub struct Vars {
    pub data: PathBuf,
    pub out: PathBuf,
    pub cache: PathBuf,
}

impl Vars {
    fn expand(&self, template: &str) -> Result<PathBuf, String> {
        let images = self.data.join("VOCdevkit/VOC2007/JPEGImages");
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
            let name = &rest[start + 1..start + end];
            let value = match name {
                "data" => &self.data,
                "out" => &self.out,
                "cache" => &self.cache,
                "images" => &images,
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{name}}} in {template:?} (known: data, out, cache, images)"
                    ))
                }
            };
            out.push_str(&value.to_string_lossy());
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(PathBuf::from(out))
    }
}

/// One stage, its paths resolved and its params merged and checked.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub params: serde_json::Value,
    /// Indices of the stages whose outputs this stage reads.
    pub upstream: Vec<usize>,
    /// Where the stage's `[[stage]]` table starts in the file (1-based).
    pub line: usize,
}

#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    /// The dataset folder `{data}` stands for.
    pub data: PathBuf,
    pub description: String,
    pub file: PathBuf,
    /// In an order where every stage comes after its upstream stages.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// `pipelines/<name>.toml` under the project root, or a path to a TOML file.
    pub fn locate(name: &str, root: &Path) -> Result<PathBuf, PipelineError> {
        let as_path = Path::new(name);
        if as_path.extension().is_some_and(|e| e == "toml") {
            return Ok(as_path.to_path_buf());
        }
        let file = root.join("pipelines").join(format!("{name}.toml"));
        if file.exists() {
            return Ok(file);
        }
        let mut known: Vec<String> = std::fs::read_dir(root.join("pipelines"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let path = e.path();
                        (path.extension()? == "toml")
                            .then(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))?
                    })
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        Err(PipelineError::Unknown {
            name: name.into(),
            file,
            known: known.join(", "),
        })
    }

    pub fn load(file: &Path, vars: &Vars) -> Result<Pipeline, PipelineError> {
        let text = std::fs::read_to_string(file).map_err(|source| PipelineError::Read {
            file: file.into(),
            source,
        })?;
        Self::parse(&text, file, vars)
    }

    pub fn parse(text: &str, file: &Path, vars: &Vars) -> Result<Pipeline, PipelineError> {
        let parsed: PipelineFile =
            toml::from_str(text).map_err(|source| PipelineError::Syntax {
                file: file.into(),
                source,
            })?;
        // Parsing succeeded above, so this cannot fail; it keeps every key's position.
        let spans = DeTable::parse(text).map_err(|source| PipelineError::Syntax {
            file: file.into(),
            source,
        })?;
        let at = Locator {
            text,
            file,
            root: spans.get_ref(),
        };
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        check_shared_params(&parsed, &at)?;

        let mut stages: Vec<Stage> = Vec::new();
        let mut producer: HashMap<PathBuf, usize> = HashMap::new();
        for (index, s) in parsed.stages.into_iter().enumerate() {
            let line = at.stage_line(index);
            let invalid = |message: String| at.invalid(line, message);
            if stages.iter().any(|t| t.name == s.name) {
                return Err(invalid(format!("two stages are named {:?}", s.name)));
            }
            let expand = |m: &BTreeMap<String, String>| -> Result<BTreeMap<String, PathBuf>, _> {
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), vars.expand(v).map_err(&invalid)?)))
                    .collect()
            };
            let inputs = expand(&s.inputs)?;
            for (name, template) in &s.inputs {
                check_inside_dataset(name, template).map_err(&invalid)?;
            }
            let outputs = expand(&s.outputs)?;
            for path in outputs.values() {
                if !path.starts_with(&vars.out) {
                    return Err(invalid(format!(
                        "stage {:?} writes {} outside the output dir {{out}}",
                        s.name,
                        path.display()
                    )));
                }
                if let Some(&other) = producer.get(path) {
                    return Err(invalid(format!(
                        "stages {:?} and {:?} both write {}",
                        stages[other].name,
                        s.name,
                        path.display()
                    )));
                }
                producer.insert(path.clone(), index);
            }
            let params = stage_params(&parsed.params, &s, index, &at)?;
            stages.push(Stage {
                name: s.name,
                kind: s.kind,
                inputs,
                outputs,
                params,
                upstream: Vec::new(),
                line,
            });
        }
        // Edges: an input that is some stage's output (or lies inside an output folder).
        for i in 0..stages.len() {
            let mut upstream: Vec<usize> = Vec::new();
            for input in stages[i].inputs.values() {
                for (path, &j) in &producer {
                    if input.starts_with(path) && j != i && !upstream.contains(&j) {
                        upstream.push(j);
                    }
                }
            }
            upstream.sort();
            stages[i].upstream = upstream;
        }
        let stages = topological_order(stages, file)?;
        Ok(Pipeline {
            name,
            data: vars.data.clone(),
            description: parsed.description,
            file: file.to_path_buf(),
            stages,
        })
    }

    pub fn index_of(&self, stage: &str) -> Result<usize, PipelineError> {
        self.stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| {
                let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                PipelineError::Invalid {
                    file: self.file.clone(),
                    line: 0,
                    message: format!("no stage {stage:?} (stages: {})", names.join(", ")),
                }
            })
    }

    /// Inputs that no stage writes must exist before the run starts (checked after
    /// set-up has fetched what the cache should hold), so a typo in a path fails at
    /// once, naming the stage's line, not after an hour of earlier stages.
    pub fn check_sources_exist(&self) -> Result<(), PipelineError> {
        for stage in &self.stages {
            for (name, path) in &stage.inputs {
                let written = self
                    .stages
                    .iter()
                    .any(|s| s.outputs.values().any(|out| path.starts_with(out)));
                if path.starts_with(&self.data) {
                    // After symlinks, still inside the dataset.
                    if let (Ok(real), Ok(data)) = (path.canonicalize(), self.data.canonicalize()) {
                        if !real.starts_with(&data) {
                            return Err(PipelineError::Invalid {
                                file: self.file.clone(),
                                line: stage.line,
                                message: format!(
                                    "stage {:?}: input {name} = {} resolves to {}, outside the dataset {}",
                                    stage.name,
                                    path.display(),
                                    real.display(),
                                    data.display()
                                ),
                            });
                        }
                    }
                }
                if !written && !path.exists() {
                    return Err(PipelineError::Invalid {
                        file: self.file.clone(),
                        line: stage.line,
                        message: format!(
                            "stage {:?}: input {name} = {} does not exist, and no stage writes it",
                            stage.name,
                            path.display()
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// An input under `{data}` or `{images}` stays inside the dataset: no `..` after it
/// (symlinks are checked when the run starts, in `check_sources_exist`).
fn check_inside_dataset(name: &str, template: &str) -> Result<(), String> {
    let rest = ["{data}", "{images}"]
        .iter()
        .find_map(|root| template.strip_prefix(root));
    match rest {
        Some(rest)
            if Path::new(rest)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir)) =>
        {
            Err(format!(
                "input {name} = {template:?} leaves the dataset folder (a `..` component)"
            ))
        }
        _ => Ok(()),
    }
}

/// Finds where things are in the file, to name their line.
struct Locator<'a> {
    text: &'a str,
    file: &'a Path,
    root: &'a DeTable<'a>,
}

impl Locator<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let start = span.start.min(self.text.len());
        1 + self.text[..start].bytes().filter(|&b| b == b'\n').count()
    }

    fn invalid(&self, line: usize, message: String) -> PipelineError {
        PipelineError::Invalid {
            file: self.file.into(),
            line,
            message,
        }
    }

    fn stage_table(&self, index: usize) -> Option<&Spanned<DeValue<'_>>> {
        match get(self.root, "stage")?.get_ref() {
            DeValue::Array(stages) => stages.get(index),
            _ => None,
        }
    }

    fn stage_line(&self, index: usize) -> usize {
        self.stage_table(index)
            .map(|t| self.line_of(t.span()))
            .unwrap_or(0)
    }

    /// The line of the deepest part of `path` found under the given params table.
    fn line_in(&self, params: &Spanned<DeValue<'_>>, path: &[Key]) -> usize {
        let mut here = params;
        for key in path {
            let next = match (here.get_ref(), key) {
                (DeValue::Table(t), Key::Name(name)) => get(t, name),
                (DeValue::Array(a), Key::Index(i)) => a.get(*i),
                _ => None,
            };
            match next {
                Some(next) => here = next,
                None => break,
            }
        }
        self.line_of(here.span())
    }
}

fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

enum Key {
    Name(String),
    Index(usize),
}

/// A serde path (`schedule[2].fit.lrr`) as keys to look up; for an unknown field, the
/// field itself is the last key (serde stops at the table that holds it).
fn keys_of(error: &serde_path_to_error::Error<serde_json::Error>) -> Vec<Key> {
    use serde_path_to_error::Segment;
    let mut keys: Vec<Key> = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Key::Index(*index)),
            Segment::Map { key } => Some(Key::Name(key.clone())),
            Segment::Enum { variant } => Some(Key::Name(variant.clone())),
            Segment::Unknown => None,
        })
        .collect();
    let message = error.inner().to_string();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        keys.push(Key::Name(field.into()));
    }
    keys
}

/// A shared `[params]` key must be taken by some stage that takes the shared params:
/// otherwise it is a typo, which would be silently ignored.
fn check_shared_params(parsed: &PipelineFile, at: &Locator) -> Result<(), PipelineError> {
    let kinds: Vec<StageKind> = parsed
        .stages
        .iter()
        .filter(|s| s.shared_params)
        .map(|s| s.kind)
        .collect();
    for key in parsed.params.keys() {
        if !kinds.iter().any(|k| k.param_keys().contains(&key.as_str())) {
            let line = get(at.root, "params")
                .and_then(|p| match p.get_ref() {
                    DeValue::Table(t) => t.iter().find(|(k, _)| k.get_ref().as_ref() == key),
                    _ => None,
                })
                .map(|(k, _)| at.line_of(k.span()))
                .unwrap_or(0);
            let mut known: Vec<&str> = kinds.iter().flat_map(|k| k.param_keys()).copied().collect();
            known.sort();
            known.dedup();
            return Err(at.invalid(
                line,
                format!(
                    "[params]: no stage that takes the shared params has a param {key:?} (known: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The stage's params: the shared ones its kind takes (unless `shared_params = false`),
/// overridden by its own, checked against the kind's type.
fn stage_params(
    shared: &toml::Table,
    stage: &StageFile,
    index: usize,
    at: &Locator,
) -> Result<serde_json::Value, PipelineError> {
    let mut params = toml::Table::new();
    if stage.shared_params {
        let keys = stage.kind.param_keys();
        params.extend(
            shared
                .iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    params.extend(stage.params.clone());
    let params = serde_json::to_value(params).map_err(|e| {
        at.invalid(
            at.stage_line(index),
            format!("stage {:?}: params: {e}", stage.name),
        )
    })?;
    if let Err(error) = stage.kind.check_params(&params) {
        let own = at.stage_table(index).and_then(|t| match t.get_ref() {
            DeValue::Table(t) => get(t, "params"),
            _ => None,
        });
        let line = match &error {
            ParamsError::Type(e) => {
                let keys = keys_of(e);
                let first = match keys.first() {
                    Some(Key::Name(name)) => Some(name.as_str()),
                    _ => None,
                };
                // The key is the stage's own, or else came from the shared [params].
                let in_own = own.is_some_and(|own| match (own.get_ref(), first) {
                    (DeValue::Table(t), Some(first)) => get(t, first).is_some(),
                    _ => false,
                });
                match (in_own, own, get(at.root, "params")) {
                    (true, Some(own), _) => at.line_in(own, &keys),
                    (false, _, Some(shared)) if first.is_some_and(|f| shared_has(shared, f)) => {
                        at.line_in(shared, &keys)
                    }
                    (_, Some(own), _) => at.line_of(own.span()),
                    _ => at.stage_line(index),
                }
            }
            ParamsError::Value(_) => own
                .map(|own| at.line_of(own.span()))
                .unwrap_or_else(|| at.stage_line(index)),
        };
        let path = match &error {
            ParamsError::Type(e)
                if !e.path().to_string().is_empty() && e.path().to_string() != "." =>
            {
                format!("params.{}: ", e.path())
            }
            _ => "params: ".into(),
        };
        let message = match &error {
            ParamsError::Type(e) => e.inner().to_string(),
            ParamsError::Value(m) => m.clone(),
        };
        return Err(at.invalid(
            line,
            format!("stage {:?} ({}): {path}{message}", stage.name, stage.kind),
        ));
    }
    Ok(params)
}

fn shared_has(shared: &Spanned<DeValue<'_>>, key: &str) -> bool {
    matches!(shared.get_ref(), DeValue::Table(t) if get(t, key).is_some())
}

/// Kahn's algorithm, keeping file order among ready stages; upstream indices are
/// rewritten to the new order.
fn topological_order(stages: Vec<Stage>, file: &Path) -> Result<Vec<Stage>, PipelineError> {
    let n = stages.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !placed[i] && stages[i].upstream.iter().all(|&u| placed[u]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let stuck: Vec<usize> = (0..n).filter(|&i| !placed[i]).collect();
                let names: Vec<&str> = stuck.iter().map(|&i| stages[i].name.as_str()).collect();
                return Err(PipelineError::Invalid {
                    file: file.into(),
                    line: stages[stuck[0]].line,
                    message: format!(
                        "the stages {} depend on each other in a cycle",
                        names.join(", ")
                    ),
                });
            }
        }
    }
    let mut new_index = vec![0; n];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    Ok(order
        .iter()
        .map(|&old| {
            let mut stage = slots[old].take().expect("each stage placed once");
            stage.upstream = stage.upstream.iter().map(|&u| new_index[u]).collect();
            stage.upstream.sort();
            stage
        })
        .collect())
}
