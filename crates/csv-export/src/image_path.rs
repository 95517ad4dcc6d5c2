//! The one check that a file name read from an annotation file or a CSV
//! artifact stays inside the images folder.
//!
//! Every stage that takes an image's name from its input (the annotation
//! loaders, the CSV readers, the drawing and loading stages) goes through
//! here, so the rule lives in one place:
//!
//! * [`check_file_name`], lexical, where a name is read: it must be a
//!   relative path of plain names (`000012.jpg`, `sub/000012.jpg`): not
//!   empty, not absolute, and without `..`, `.` or empty components;
//! * [`ImagesDir::path`] (or [`image_path`]), where a file is opened: the
//!   same check, then the joined path must not resolve (after symlinks)
//!   outside the images folder.
//!
//! The errors say what is wrong with the name; the caller adds the source
//! file and the entry (`bb.csv:3: ...`, `pascal_train2007.json: images[0]
//! (id 12): ...`).

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why a file name from an input cannot name an image of the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNameError {
    /// The name as the input gives it.
    pub file_name: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FileNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "file name {:?} {}; a file name must be a relative path inside the images folder",
            self.file_name, self.reason
        )
    }
}

impl std::error::Error for FileNameError {}

/// Checks that `file_name` is a relative path of plain names: not empty, not
/// absolute, no `..`, `.` or empty components, no NUL byte. Reads no file.
pub fn check_file_name(file_name: &str) -> Result<(), FileNameError> {
    let refuse = |reason: String| {
        Err(FileNameError {
            file_name: file_name.to_owned(),
            reason,
        })
    };
    if file_name.is_empty() {
        return refuse("is empty".into());
    }
    if file_name.contains('\0') {
        return refuse("contains a NUL byte".into());
    }
    let path = Path::new(file_name);
    if path.has_root() || path.is_absolute() {
        return refuse("is absolute".into());
    }
    // `Path::components` quietly drops interior `.` and repeated separators;
    // the raw text is split too so that `a/./b` and `a//b` are refused as well.
    for component in path.components() {
        match component {
            Component::Normal(_) => {}
            Component::ParentDir => return refuse("has a `..` component".into()),
            Component::CurDir => return refuse("has a `.` component".into()),
            Component::RootDir | Component::Prefix(_) => return refuse("is absolute".into()),
        }
    }
    for part in file_name.split(std::path::is_separator) {
        match part {
            "" => return refuse("has an empty component".into()),
            "." => return refuse("has a `.` component".into()),
            ".." => return refuse("has a `..` component".into()),
            _ => {}
        }
    }
    Ok(())
}

/// An images folder, resolved once, that file names are checked against.
#[derive(Debug, Clone)]
pub struct ImagesDir {
    root: PathBuf,
    /// `root` with symlinks resolved; `None` where it cannot be resolved
    /// (a missing folder: then no file under it can be opened either).
    canonical: Option<PathBuf>,
}

impl ImagesDir {
    pub fn new(root: &Path) -> Self {
        ImagesDir {
            root: root.to_owned(),
            canonical: std::fs::canonicalize(root).ok(),
        }
    }

    /// The folder as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/file_name`, after [`check_file_name`] and a check that the path
    /// does not resolve (after symlinks) outside the folder. A file that does
    /// not exist passes: opening it then fails and names it.
    pub fn path(&self, file_name: &str) -> Result<PathBuf, FileNameError> {
        check_file_name(file_name)?;
        let path = self.root.join(file_name);
        if let (Some(root), Ok(resolved)) = (&self.canonical, std::fs::canonicalize(&path)) {
            if !resolved.starts_with(root) {
                return Err(FileNameError {
                    file_name: file_name.to_owned(),
                    reason: format!(
                        "resolves to {}, outside the images folder {}",
                        resolved.display(),
                        self.root.display()
                    ),
                });
            }
        }
        Ok(path)
    }
}

/// [`ImagesDir::path`] for one name (resolves `images_dir` each call).
pub fn image_path(images_dir: &Path, file_name: &str) -> Result<PathBuf, FileNameError> {
    ImagesDir::new(images_dir).path(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_names_pass() {
        for name in [
            "000012.jpg",
            "sub/000012.jpg",
            "a b.jpg",
            "..hidden.jpg",
            "x..jpg",
        ] {
            assert_eq!(check_file_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_leaving_the_folder_are_refused_with_the_reason() {
        for (name, reason) in [
            ("", "is empty"),
            ("/etc/passwd", "is absolute"),
            ("../../../../etc/passwd", "`..`"),
            ("sub/../../x.jpg", "`..`"),
            ("./a.jpg", "`.`"),
            ("a/./b.jpg", "`.`"),
            ("a//b.jpg", "empty component"),
            ("dir/", "empty component"),
            ("a\0b.jpg", "NUL"),
        ] {
            let error = check_file_name(name).unwrap_err().to_string();
            assert!(
                error.contains(reason) && error.contains(&format!("{name:?}")),
                "{name:?}: {error}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::write(images.join("a.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), images.join("evil.jpg")).unwrap();
        std::os::unix::fs::symlink(dir.path(), images.join("up")).unwrap();
        std::os::unix::fs::symlink(images.join("a.jpg"), images.join("sub/alias.jpg")).unwrap();
        let folder = ImagesDir::new(&images);
        assert_eq!(folder.path("a.jpg").unwrap(), images.join("a.jpg"));
        assert_eq!(
            folder.path("sub/alias.jpg").unwrap(),
            images.join("sub/alias.jpg"),
            "a link that stays inside is fine"
        );
        assert_eq!(
            folder.path("missing.jpg").unwrap(),
            images.join("missing.jpg")
        );
        for name in ["evil.jpg", "up/secret.txt"] {
            let error = folder.path(name).unwrap_err().to_string();
            assert!(
                error.contains("outside the images folder") && error.contains(name),
                "{error}"
            );
        }
        let error = image_path(&images, "../secret.txt").unwrap_err();
        assert!(error.reason.contains("`..`"), "{error}");
    }
}
