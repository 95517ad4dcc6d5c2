//! Pipeline files: order, placeholders, merged params, and every refusal naming
//! the file and the line.

use pipeline::{Pipeline, StageKind, Vars};
use std::path::{Path, PathBuf};

fn vars() -> Vars {
    Vars {
        data: "/d".into(),
        out: "/o".into(),
        cache: "/c".into(),
    }
}

fn parse(text: &str) -> Result<Pipeline, String> {
    Pipeline::parse(text, Path::new("t.toml"), &vars()).map_err(|e| format!("{e:#}"))
}

#[test]
fn orders_stages_by_their_inputs_and_expands_placeholders() {
    let text = r#"
        [params]
        size = 112
        task = "bbox"
        [[stage]]
        name = "second"
        kind = "augment-grid"
        inputs = { x = "{out}/one.csv" }
        outputs = { y = "{out}/two.png" }
        params = { size = 64 }
        [[stage]]
        name = "first"
        kind = "annotations"
        inputs = { json = "{data}/p.json", images = "{images}" }
        outputs = { x = "{out}/one.csv" }
        [[stage]]
        name = "train"
        kind = "train"
        inputs = { csv = "{out}/one.csv" }
        outputs = { model = "{out}/m.safetensors" }
    "#;
    let p = parse(text).unwrap();
    let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "train"]);
    assert_eq!(p.stages[1].upstream, [0]);
    assert_eq!(p.stages[1].kind, StageKind::AugmentGrid);
    assert_eq!(p.stages[0].line, 11, "the line of its [[stage]] header");
    assert_eq!(
        p.stages[0].inputs["images"],
        PathBuf::from("/d/VOCdevkit/VOC2007/JPEGImages")
    );
    assert_eq!(
        p.stages[1].params["size"], 64,
        "a stage's params override the shared ones"
    );
    assert!(
        p.stages[1].params.get("task").is_none(),
        "a shared param goes only to the kinds that take it"
    );
    assert!(p.stages[0].params.get("size").is_none());
    assert_eq!(p.stages[2].params["size"], 112);
    assert_eq!(p.stages[2].params["task"], "bbox");
}

/// Each bad file, with the line its error must name and a phrase it must contain.
#[test]
fn refuses_bad_pipelines_naming_the_file_and_line() {
    let train = "[[stage]]\nname='t'\nkind='train'\n";
    let cases: Vec<(String, &str, &str)> = vec![
        ("[[stage]]\nname='s'\nkind='zzz'".into(), "line 3", "unknown variant `zzz`"),
        (
            "[[stage]]\nname='s'\nkind='draw'\noutputs={x='/elsewhere/x'}".into(),
            "t.toml:1:",
            "outside the output dir",
        ),
        (
            "[[stage]]\nname='s'\nkind='draw'\ninputs={x='{nope}/x'}".into(),
            "t.toml:1:",
            "unknown placeholder",
        ),
        (
            "[[stage]]\nname='s'\nkind='draw'\n\n[[stage]]\nname='s'\nkind='draw'".into(),
            "t.toml:5:",
            "two stages are named",
        ),
        (
            "[[stage]]\nname='s'\nkind='draw'\ninputs={i='{out}/b'}\noutputs={o='{out}/a'}\n\
             [[stage]]\nname='t'\nkind='draw'\ninputs={i='{out}/a'}\noutputs={o='{out}/b'}"
                .into(),
            "t.toml:1:",
            "cycle",
        ),
        ("[[stage]]\nname = ".into(), "t.toml", "parsing pipeline"),
        // A typo in a stage's own params.
        (
            "[[stage]]\nname='s'\nkind='draw'\nparams = { rowz = 3 }".into(),
            "t.toml:4:",
            "unknown field `rowz`",
        ),
        // A wrong type.
        (
            "[[stage]]\nname='s'\nkind='draw'\nparams = { rows = 'many' }".into(),
            "t.toml:4:",
            "params.rows: invalid type",
        ),
        // A typo deep in a schedule spread over lines: the line of the key.
        (
            format!(
                "{train}params = {{ task = 'bbox', schedule = [\n  {{ fit = {{ lr = 1e-3 }} }},\n  {{ fit = {{ lr = 1e-3, cycle_lenn = 2 }} }},\n] }}"
            ),
            "t.toml:6:",
            "unknown field `cycle_lenn`",
        ),
        // An unknown step.
        (
            format!("{train}params = {{ task = 'bbox', schedule = [\n  {{ fitt = {{ lr = 1e-3 }} }},\n] }}"),
            "t.toml:5:",
            "unknown variant `fitt`",
        ),
        // A value the type allows but the task does not.
        (
            format!("{train}params = {{ task = 'bbox', loss = 'cross_entropy' }}"),
            "t.toml:4:",
            "not available for task",
        ),
        (
            format!("{train}params = {{ task = 'bbox', schedule = [{{ fit = {{ lr = -1.0 }} }}] }}"),
            "t.toml:4:",
            "learning rates must be positive",
        ),
        // A typo in the shared params: no stage takes it.
        (
            format!("[params]\ntask = 'bbox'\nbacbone = 'x'\n{train}"),
            "t.toml:3:",
            "no stage that takes the shared params has a param \"bacbone\"",
        ),
        // A wrong type in the shared params: the line in [params].
        (
            format!("[params]\ntask = 'bbox'\nbatch = 'big'\n{train}"),
            "t.toml:3:",
            "params.batch: invalid type",
        ),
        // Out of the dataset.
        (
            "[[stage]]\nname='s'\nkind='draw'\ninputs={csv='{data}/../../etc/passwd'}".into(),
            "t.toml:1:",
            "leaves the dataset folder",
        ),
        // A missing required param.
        (train.into(), "t.toml:1:", "missing field `task`"),
        // A backbone that does not exist: refused at load, with the ones that do.
        (
            format!("{train}params = {{ task = 'bbox', backbone = 'resnet35' }}"),
            "t.toml:4:",
            "unknown variant `resnet35`",
        ),
        // A step that would do nothing.
        (
            format!("{train}params = {{ task = 'bbox', schedule = [{{ unfreeze = false }}] }}"),
            "t.toml:4:",
            "unfreeze takes `true`",
        ),
    ];
    for (text, place, phrase) in cases {
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("t.toml") && err.contains(place) && err.contains(phrase),
            "{text:?}\ngave: {err}\nexpected {place:?} and {phrase:?}"
        );
    }
}

#[test]
fn an_input_that_no_stage_writes_must_exist() {
    let dir = std::env::temp_dir().join(format!("pipeline-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("there.json"), "{}").unwrap();
    let vars = Vars {
        data: dir.clone(),
        out: dir.join("out"),
        cache: dir.join("cache"),
    };
    let text = "[[stage]]\nname='a'\nkind='annotations'\ninputs={json='{data}/there.json'}\noutputs={lrg='{out}/lrg.csv'}\n\
                [[stage]]\nname='b'\nkind='draw'\ninputs={csv='{out}/lrg.csv', images='{data}/nowhere'}\noutputs={png='{out}/x.png'}";
    let p = Pipeline::parse(text, Path::new("p.toml"), &vars).unwrap();
    let err = format!("{}", p.check_sources_exist().unwrap_err());
    assert!(
        err.starts_with("p.toml:6:")
            && err.contains("nowhere")
            && err.contains("no stage writes it"),
        "{err}"
    );
    std::fs::create_dir_all(dir.join("nowhere")).unwrap();
    p.check_sources_exist().unwrap();
    // A symlink out of the dataset is refused.
    std::fs::remove_dir(dir.join("nowhere")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("nowhere")).unwrap();
    let err = format!("{}", p.check_sources_exist().unwrap_err());
    assert!(err.contains("outside the dataset"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_project_pipelines_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_some_and(|e| e == "toml") {
            Pipeline::load(&file, &vars()).unwrap_or_else(|e| panic!("{e:#}"));
            n += 1;
        }
    }
    assert!(n >= 3, "found {n} pipeline files in {}", root.display());
}
