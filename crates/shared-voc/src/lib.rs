//! Where the real Pascal VOC 2007 train split lives, for the tests and
//! benchmarks that use it: `$LESSON8_VOC2007` if set, else `../shared/voc2007`
//! beside the repository. The data is never copied into the repository, so
//! every user of it must skip, saying why, where it is absent.

use std::path::{Path, PathBuf};

/// Overrides the default location.
pub const ENV_VAR: &str = "LESSON8_VOC2007";

/// The lesson's layout inside the directory.
pub const JSON: &str = "pascal_train2007.json";
pub const DEVKIT: &str = "VOCdevkit/VOC2007";
pub const IMAGES: &str = "VOCdevkit/VOC2007/JPEGImages";
pub const ANNOTATIONS: &str = "VOCdevkit/VOC2007/Annotations";

/// The directory where the copy is expected, whether or not it is there.
pub fn location() -> PathBuf {
    match std::env::var_os(ENV_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/voc2007"),
    }
}

/// The VOC 2007 directory if it holds the annotations JSON, the JPEGs and the
/// XML annotations; otherwise `None`, after printing which part is missing so
/// that a skipped test says why.
pub fn voc2007() -> Option<PathBuf> {
    let dir = location();
    let missing: Vec<&str> = [JSON, IMAGES, ANNOTATIONS]
        .into_iter()
        .filter(|part| !dir.join(part).exists())
        .collect();
    if missing.is_empty() {
        Some(dir)
    } else {
        eprintln!("skipping: the real VOC 2007 data is not at {} (missing {}; set {ENV_VAR} to point elsewhere)", dir.display(), missing.join(", "));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_parts_and_honours_the_override() {
        let dir = std::env::temp_dir().join(format!("shared-voc-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(IMAGES)).unwrap();
        std::fs::create_dir_all(dir.join(ANNOTATIONS)).unwrap();
        // The only test in this crate, so nothing else reads the variable meanwhile.
        std::env::set_var(ENV_VAR, &dir);
        assert_eq!(location(), dir);
        assert_eq!(voc2007(), None, "the JSON is missing");
        std::fs::write(dir.join(JSON), "{}").unwrap();
        assert_eq!(voc2007(), Some(dir.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
