//! The stage kinds a pipeline file can name: which params each takes, which
//! crates' code it runs (part of its fingerprint), and where it runs.

use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::params::{
    AnnotationsParams, AugmentGridParams, DrawParams, EvaluateParams, ExecParams, PlotLrFindParams,
    PlotMetricsParams, TrainParams,
};

/// Every stage kind. The names are those pipeline files use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StageKind {
    #[serde(rename = "exec")]
    Exec,
    #[serde(rename = "annotations")]
    Annotations,
    #[serde(rename = "draw")]
    Draw,
    #[serde(rename = "augment-grid")]
    AugmentGrid,
    #[serde(rename = "plot-lr-find")]
    PlotLrFind,
    #[serde(rename = "plot-metrics")]
    PlotMetrics,
    #[serde(rename = "lr_find")]
    LrFind,
    #[serde(rename = "train")]
    Train,
    #[serde(rename = "predict")]
    Predict,
    #[serde(rename = "evaluate")]
    Evaluate,
}

const TRAINER_CODE: &[&str] = &[
    "trainer",
    "model-zoo",
    "augment",
    "csv-export",
    "multibox",
    "pipeline",
];

impl StageKind {
    pub const ALL: [StageKind; 10] = [
        StageKind::Exec,
        StageKind::Annotations,
        StageKind::Draw,
        StageKind::AugmentGrid,
        StageKind::PlotLrFind,
        StageKind::PlotMetrics,
        StageKind::LrFind,
        StageKind::Train,
        StageKind::Predict,
        StageKind::Evaluate,
    ];

    /// The name pipeline files use.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Exec => "exec",
            StageKind::Annotations => "annotations",
            StageKind::Draw => "draw",
            StageKind::AugmentGrid => "augment-grid",
            StageKind::PlotLrFind => "plot-lr-find",
            StageKind::PlotMetrics => "plot-metrics",
            StageKind::LrFind => "lr_find",
            StageKind::Train => "train",
            StageKind::Predict => "predict",
            StageKind::Evaluate => "evaluate",
        }
    }

    /// Kinds that need libtorch run in the trainer's binary; the rest in the runner.
    pub fn runs_in_trainer(self) -> bool {
        matches!(
            self,
            StageKind::LrFind | StageKind::Train | StageKind::Predict
        )
    }

    /// The workspace crates whose code the kind runs (part of its fingerprint).
    pub fn code(self) -> &'static [&'static str] {
        match self {
            StageKind::Exec => &[],
            StageKind::Annotations => &[
                "voc-annotations",
                "largest-object",
                "multibox",
                "csv-export",
                "pipeline",
            ],
            StageKind::Draw => &["viz", "csv-export", "pipeline"],
            StageKind::AugmentGrid => &["augment", "viz", "csv-export", "pipeline"],
            StageKind::PlotLrFind | StageKind::PlotMetrics => &["viz", "pipeline"],
            StageKind::LrFind | StageKind::Train | StageKind::Predict => TRAINER_CODE,
            StageKind::Evaluate => &["multibox", "viz", "csv-export", "pipeline"],
        }
    }

    /// The param keys the kind takes: a shared `[params]` key is handed to the
    /// stages whose kind takes it, and must be taken by at least one.
    pub fn param_keys(self) -> &'static [&'static str] {
        match self {
            StageKind::Exec => fields_of::<ExecParams>(),
            StageKind::Annotations => fields_of::<AnnotationsParams>(),
            StageKind::Draw => fields_of::<DrawParams>(),
            StageKind::AugmentGrid => fields_of::<AugmentGridParams>(),
            StageKind::PlotLrFind => fields_of::<PlotLrFindParams>(),
            StageKind::PlotMetrics => fields_of::<PlotMetricsParams>(),
            StageKind::Evaluate => fields_of::<EvaluateParams>(),
            StageKind::LrFind | StageKind::Train | StageKind::Predict => fields_of::<TrainParams>(),
        }
    }

    /// Deserialises `params` into the kind's type and checks what the type cannot
    /// express (a loss that is not the task's): the check the runner makes before
    /// anything runs. A type error says which key is wrong.
    pub fn check_params(self, params: &serde_json::Value) -> Result<(), ParamsError> {
        fn typed<T: DeserializeOwned>(params: &serde_json::Value) -> Result<T, ParamsError> {
            serde_path_to_error::deserialize(params).map_err(ParamsError::Type)
        }
        match self {
            StageKind::Exec => typed::<ExecParams>(params).map(drop),
            StageKind::Annotations => typed::<AnnotationsParams>(params).map(drop),
            StageKind::Draw => typed::<DrawParams>(params).map(drop),
            StageKind::AugmentGrid => typed::<AugmentGridParams>(params)?
                .augment
                .check()
                .map_err(ParamsError::Value),
            StageKind::PlotLrFind => typed::<PlotLrFindParams>(params).map(drop),
            StageKind::PlotMetrics => typed::<PlotMetricsParams>(params).map(drop),
            StageKind::Evaluate => {
                let p = typed::<EvaluateParams>(params)?;
                if (0.0..=1.0).contains(&p.iou_threshold) {
                    Ok(())
                } else {
                    Err(ParamsError::Value(format!(
                        "iou_threshold must be between 0 and 1, not {}",
                        p.iou_threshold
                    )))
                }
            }
            StageKind::LrFind | StageKind::Train | StageKind::Predict => {
                typed::<TrainParams>(params)?
                    .check()
                    .map_err(ParamsError::Value)
            }
        }
    }
}

/// Why a stage's params were refused.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// A key the kind does not take, or a value of the wrong type; the path names the key.
    #[error("{0}")]
    Type(serde_path_to_error::Error<serde_json::Error>),
    /// Values that are each well-typed but do not go together.
    #[error("{0}")]
    Value(String),
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StageKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = StageKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown stage kind {s:?} (known: {})", known.join(", "))
            })
    }
}

/// The field names of a struct that derives `Deserialize` (serde hands them to
/// `deserialize_struct`), so the list of a kind's keys is never written twice.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_keys_come_from_the_types() {
        for kind in StageKind::ALL {
            assert_eq!(kind.name().parse::<StageKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        assert!("zzz"
            .parse::<StageKind>()
            .unwrap_err()
            .contains("known: exec"));
        assert_eq!(
            StageKind::Draw.param_keys(),
            ["rows", "order", "on_bad_image", "min_score"]
        );
        assert!(StageKind::Train.param_keys().contains(&"schedule"));
        assert!(StageKind::PlotMetrics.param_keys().is_empty());
    }
}
