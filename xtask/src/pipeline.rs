//! Pipeline files (`pipelines/<name>.toml`): stages with named inputs,
//! outputs and params, ordered as a DAG by matching each stage's inputs to
//! earlier stages' outputs.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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
    kind: String,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    #[serde(default)]
    params: toml::Table,
    /// Whether the stage's params include the pipeline-level `[params]`.
    #[serde(default = "yes")]
    shared_params: bool,
}

fn yes() -> bool {
    true
}

/// Values substituted into `{name}` placeholders of input and output paths.
#[derive(Debug, Clone)]
pub struct Vars {
    pub data: PathBuf,
    pub out: PathBuf,
    pub cache: PathBuf,
}

impl Vars {
    fn expand(&self, template: &str, file: &Path) -> Result<PathBuf> {
        let images = self.data.join("VOCdevkit/VOC2007/JPEGImages");
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .with_context(|| format!("{}: unclosed '{{' in {template:?}", file.display()))?;
            let name = &rest[start + 1..start + end];
            let value = match name {
                "data" => &self.data,
                "out" => &self.out,
                "cache" => &self.cache,
                "images" => &images,
                _ => bail!("{}: unknown placeholder {{{name}}} in {template:?} (known: data, out, cache, images)", file.display()),
            };
            out.push_str(&value.to_string_lossy());
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Ok(PathBuf::from(out))
    }
}

/// One stage, its paths resolved.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub kind: String,
    pub inputs: BTreeMap<String, PathBuf>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub params: serde_json::Value,
    /// Indices of the stages whose outputs this stage reads.
    pub upstream: Vec<usize>,
}

#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    /// In an order where every stage comes after its upstream stages.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// `pipelines/<name>.toml` under the project root, or a path to a TOML file.
    pub fn locate(name: &str, root: &Path) -> Result<PathBuf> {
        let as_path = Path::new(name);
        if as_path.extension().is_some_and(|e| e == "toml") {
            return Ok(as_path.to_path_buf());
        }
        let file = root.join("pipelines").join(format!("{name}.toml"));
        if !file.exists() {
            let known: Vec<String> = std::fs::read_dir(root.join("pipelines"))
                .map(|dir| {
                    dir.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.path()
                                .file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "no pipeline {name:?}: {} does not exist (known: {})",
                file.display(),
                known.join(", ")
            );
        }
        Ok(file)
    }

    pub fn load(file: &Path, vars: &Vars, known_kinds: &[&str]) -> Result<Pipeline> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading pipeline {}", file.display()))?;
        Self::parse(&text, file, vars, known_kinds)
    }

    pub fn parse(text: &str, file: &Path, vars: &Vars, known_kinds: &[&str]) -> Result<Pipeline> {
        let parsed: PipelineFile =
            toml::from_str(text).with_context(|| format!("parsing pipeline {}", file.display()))?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut stages = Vec::new();
        let mut producer: HashMap<PathBuf, usize> = HashMap::new();
        for (index, s) in parsed.stages.into_iter().enumerate() {
            if !known_kinds.contains(&s.kind.as_str()) {
                bail!(
                    "{}: stage {:?} has unknown kind {:?} (known: {})",
                    file.display(),
                    s.name,
                    s.kind,
                    known_kinds.join(", ")
                );
            }
            if stages.iter().any(|t: &Stage| t.name == s.name) {
                bail!("{}: two stages are named {:?}", file.display(), s.name);
            }
            let expand = |m: &BTreeMap<String, String>| -> Result<BTreeMap<String, PathBuf>> {
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), vars.expand(v, file)?)))
                    .collect()
            };
            let inputs = expand(&s.inputs)?;
            let outputs = expand(&s.outputs)?;
            for path in outputs.values() {
                if !path.starts_with(&vars.out) {
                    bail!(
                        "{}: stage {:?} writes {} outside the output dir {{out}}",
                        file.display(),
                        s.name,
                        path.display()
                    );
                }
                if let Some(&other) = producer.get(path) {
                    bail!(
                        "{}: stages {:?} and {:?} both write {}",
                        file.display(),
                        stages[other].name,
                        s.name,
                        path.display()
                    );
                }
                producer.insert(path.clone(), index);
            }
            let mut params = if s.shared_params {
                parsed.params.clone()
            } else {
                toml::Table::new()
            };
            params.extend(s.params);
            stages.push(Stage {
                name: s.name,
                kind: s.kind,
                inputs,
                outputs,
                params: serde_json::to_value(params)?,
                upstream: Vec::new(),
            });
        }
        // Edges: an input that is some stage's output (or lies inside an output folder).
        for i in 0..stages.len() {
            let mut upstream: Vec<usize> = Vec::new();
            for input in stages[i].inputs.values() {
                for (path, &j) in &producer {
                    if (input == path || input.starts_with(path))
                        && j != i
                        && !upstream.contains(&j)
                    {
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
            description: parsed.description,
            file: file.to_path_buf(),
            stages,
        })
    }

    pub fn index_of(&self, stage: &str) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| s.name == stage)
            .with_context(|| {
                let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "pipeline {} has no stage {stage:?} (stages: {})",
                    self.name,
                    names.join(", ")
                )
            })
    }
}

/// Kahn's algorithm, keeping file order among ready stages; upstream indices are
/// rewritten to the new order.
fn topological_order(stages: Vec<Stage>, file: &Path) -> Result<Vec<Stage>> {
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
                let stuck: Vec<&str> = (0..n)
                    .filter(|&i| !placed[i])
                    .map(|i| stages[i].name.as_str())
                    .collect();
                bail!(
                    "{}: the stages {} depend on each other in a cycle",
                    file.display(),
                    stuck.join(", ")
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            data: "/d".into(),
            out: "/o".into(),
            cache: "/c".into(),
        }
    }

    const KINDS: &[&str] = &["a", "b"];

    #[test]
    fn orders_stages_by_their_inputs_and_expands_placeholders() {
        let text = r#"
            [params]
            size = 224
            [[stage]]
            name = "second"
            kind = "b"
            inputs = { x = "{out}/one.csv" }
            outputs = { y = "{out}/two.csv" }
            params = { size = 64 }
            [[stage]]
            name = "first"
            kind = "a"
            inputs = { json = "{data}/p.json", images = "{images}" }
            outputs = { x = "{out}/one.csv" }
        "#;
        let p = Pipeline::parse(text, Path::new("t.toml"), &vars(), KINDS).unwrap();
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(p.stages[1].upstream, [0]);
        assert_eq!(
            p.stages[0].inputs["images"],
            PathBuf::from("/d/VOCdevkit/VOC2007/JPEGImages")
        );
        assert_eq!(p.stages[0].params["size"], 224);
        assert_eq!(
            p.stages[1].params["size"], 64,
            "a stage's params override the shared ones"
        );
    }

    #[test]
    fn refuses_bad_pipelines_naming_the_file() {
        let cases = [
            ("[[stage]]\nname='s'\nkind='zzz'", "unknown kind"),
            (
                "[[stage]]\nname='s'\nkind='a'\noutputs={x='/elsewhere/x'}",
                "outside the output dir",
            ),
            (
                "[[stage]]\nname='s'\nkind='a'\ninputs={x='{nope}/x'}",
                "unknown placeholder",
            ),
            (
                "[[stage]]\nname='s'\nkind='a'\n[[stage]]\nname='s'\nkind='b'",
                "two stages are named",
            ),
            (
                "[[stage]]\nname='s'\nkind='a'\ninputs={i='{out}/b'}\noutputs={o='{out}/a'}\n\
                 [[stage]]\nname='t'\nkind='a'\ninputs={i='{out}/a'}\noutputs={o='{out}/b'}",
                "cycle",
            ),
            ("[[stage]]\nname = ", "parsing pipeline"),
        ];
        for (text, expected) in cases {
            let err = format!(
                "{:#}",
                Pipeline::parse(text, Path::new("bad.toml"), &vars(), KINDS).unwrap_err()
            );
            assert!(
                err.contains("bad.toml") && err.contains(expected),
                "{text:?} gave {err:?}"
            );
        }
    }
}
