//! Loading a backbone's pretrained weights from safetensors with PyTorch names.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::nn;

use crate::{Arch, ModelZooError};

/// What [`load_backbone`] did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub file: PathBuf,
    /// Body variables set from the file.
    pub loaded: usize,
    /// Keys of the file that a backbone does not use (the ImageNet classifier,
    /// BatchNorm's `num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// Keys of the ImageNet models that are not part of the body.
fn is_ignored(arch: Arch, key: &str) -> bool {
    let classifier = match arch {
        Arch::ResNet34 => "fc.",
        Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => "_fc.",
    };
    key.starts_with(classifier) || key.ends_with(".num_batches_tracked")
}

/// Sets every body variable of a [`crate::Net`] built at `vs.root()` from a
/// safetensors state dict; the head keeps its initialisation. All body names
/// must match both ways, with equal shapes, or nothing is changed and the
/// error lists the differences.
pub fn load_backbone(
    vs: &mut nn::VarStore,
    arch: Arch,
    safetensors: &Path,
) -> Result<LoadReport, ModelZooError> {
    let path = safetensors.display().to_string();
    let named =
        tch::Tensor::read_safetensors(safetensors).map_err(|source| ModelZooError::Read {
            path: path.clone(),
            source,
        })?;
    let variables = vs.variables();
    let body: HashMap<&str, &tch::Tensor> = variables
        .iter()
        .filter(|(name, _)| !name.starts_with("head."))
        .map(|(n, t)| (n.as_str(), t))
        .collect();

    let mut ignored = Vec::new();
    let mut unexpected = BTreeSet::new();
    let mut mismatched = Vec::new();
    let mut present = BTreeSet::new();
    let mut found = 0;
    for (key, tensor) in &named {
        match body.get(key.as_str()) {
            _ if is_ignored(arch, key) => ignored.push(key.clone()),
            None => {
                unexpected.insert(key.as_str());
            }
            Some(var) => {
                present.insert(key.as_str());
                if var.size() == tensor.size() {
                    found += 1;
                } else {
                    mismatched.push(format!(
                        "{key}: file {:?}, model {:?}",
                        tensor.size(),
                        var.size()
                    ));
                }
            }
        }
    }
    let missing: BTreeSet<&str> = body
        .keys()
        .copied()
        .filter(|k| !present.contains(k))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        let mut details = Vec::new();
        let list = |what: &str, items: Vec<String>| {
            let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
            let more = if items.len() > 8 {
                format!(" and {} more", items.len() - 8)
            } else {
                String::new()
            };
            format!("{} {what}: {}{more}", items.len(), shown.join(", "))
        };
        if !missing.is_empty() {
            details.push(list(
                "missing",
                missing.iter().map(|s| s.to_string()).collect(),
            ));
        }
        if !unexpected.is_empty() {
            details.push(list(
                "unexpected",
                unexpected.iter().map(|s| s.to_string()).collect(),
            ));
        }
        if !mismatched.is_empty() {
            details.push(list("with other shapes", mismatched));
        }
        return Err(ModelZooError::Mismatch {
            path,
            arch,
            details: details.join("; "),
        });
    }

    let _guard = tch::no_grad_guard();
    for (key, tensor) in &named {
        if let Some(var) = body.get(key.as_str()) {
            let mut var = var.shallow_clone();
            let source = tensor.to_kind(var.kind()).to_device(var.device());
            var.f_copy_(&source).map_err(|source| ModelZooError::Copy {
                path: path.clone(),
                name: key.clone(),
                source,
            })?;
        }
    }
    ignored.sort();
    Ok(LoadReport {
        file: safetensors.to_path_buf(),
        loaded: found,
        ignored,
    })
}
