use std::path::Path;

use csv_export::{
    read_bb, read_lrg, read_lrg_bb, write_atomic, write_bb, write_bytes_atomic, write_lrg,
    write_lrg_bb, BbRow, CsvError, LrgBbRow, LrgRow, StagedDir,
};

fn lrg(file_name: &str, category: &str) -> LrgRow {
    LrgRow {
        file_name: file_name.into(),
        category: category.into(),
    }
}

fn bb(file_name: &str, bbox: [f32; 4]) -> BbRow {
    BbRow {
        file_name: file_name.into(),
        bbox,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn written_files_have_the_lessons_bytes_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let lrg_rows = vec![
        lrg("000012.jpg", "car"),
        lrg("000017.jpg", "horse"),
        lrg("odd, \"name\".jpg", "tvmonitor"),
    ];
    let bb_rows = vec![
        bb("000012.jpg", [96.0, 155.0, 269.0, 350.0]),
        bb("000017.jpg", [77.0, 89.0, 335.0, 402.0]),
    ];
    let (lrg_path, bb_path) = (dir.path().join("lrg.csv"), dir.path().join("bb.csv"));
    write_lrg(&lrg_path, &lrg_rows).unwrap();
    write_bb(&bb_path, &bb_rows).unwrap();
    assert_eq!(
        std::fs::read_to_string(&lrg_path).unwrap(),
        "fn,cat\n000012.jpg,car\n000017.jpg,horse\n\"odd, \"\"name\"\".jpg\",tvmonitor\n"
    );
    assert_eq!(
        std::fs::read_to_string(&bb_path).unwrap(),
        "fn,bbox\n000012.jpg,96 155 269 350\n000017.jpg,77 89 335 402\n"
    );
    assert_eq!(read_lrg(&lrg_path).unwrap(), lrg_rows);
    assert_eq!(read_bb(&bb_path).unwrap(), bb_rows);
    assert_eq!(
        files_in(dir.path()),
        ["bb.csv", "lrg.csv"],
        "no temp files left"
    );
}

#[test]
fn the_joined_csv_has_class_and_box_per_row_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let rows = vec![
        LrgBbRow {
            file_name: "000012.jpg".into(),
            category: "car".into(),
            bbox: [96.0, 155.0, 269.0, 350.0],
        },
        LrgBbRow {
            file_name: "odd, name.jpg".into(),
            category: "horse".into(),
            bbox: [77.5, 89.0, 335.0, 402.0],
        },
    ];
    let path = dir.path().join("lrg_bb.csv");
    write_lrg_bb(&path, &rows).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "fn,cat,bbox\n000012.jpg,car,96 155 269 350\n\"odd, name.jpg\",horse,77.5 89 335 402\n"
    );
    assert_eq!(read_lrg_bb(&path).unwrap(), rows);
    for (text, line, message) in [
        (
            "fn,cat,bbox\na.jpg,car,1 2 3 4\nb.jpg,car\n",
            3,
            "2 fields, expected 3",
        ),
        ("fn,cat,bbox\na.jpg,,1 2 3 4\n", 2, "empty category"),
        ("fn,cat,bbox\na.jpg,car,4 2 3 4\n", 2, "top > bottom"),
        ("fn,bbox,cat\na.jpg,1 2 3 4,car\n", 1, "header"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = read_lrg_bb(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}: ", path.display())),
            "{text:?}: {err}"
        );
        assert!(err.to_string().contains(message), "{text:?}: {err}");
    }
}

#[test]
fn readers_name_file_and_line_of_a_bad_row() {
    let cases: &[(&str, &str, u64, &str)] = &[
        ("bb", "fn,bbox\na.jpg,1 2 3 4\nb.jpg,1 2 3\n", 3, "3 values"),
        ("bb", "fn,bbox\na.jpg,1 2 x 4\n", 2, "not a number"),
        ("bb", "fn,bbox\na.jpg,9 2 3 4\n", 2, "top > bottom"),
        ("bb", "fn,bbox\na.jpg,1 2 3 4,extra\n", 2, "3 fields"),
        ("bb", "fn,bbox\n,1 2 3 4\n", 2, "empty file name"),
        ("bb", "fn,box\na.jpg,1 2 3 4\n", 1, "header"),
        ("bb", "", 1, "empty file"),
        ("lrg", "fn,cat\na.jpg,car\nb.jpg\n", 3, "1 fields"),
        ("lrg", "fn,cat\na.jpg,car\nb.jpg,\n", 3, "empty category"),
        ("lrg", "fn,cat\na.jpg,car\n\nb.jpg,cat\n", 3, "blank line"),
        (
            "lrg",
            "fn,cat\r\na.jpg,car\r\n\r\nb.jpg,cat\r\n",
            3,
            "blank line",
        ),
        ("lrg", "fn,cat\r\na.jpg,car\r\nb.jpg\r\n", 3, "1 fields"),
        ("lrg", "fn,bbox\na.jpg,car\n", 1, "header"),
        (
            "bb",
            "fn,bbox\na.jpg,1 2 3 4\n../../../../etc/passwd,1 2 3 4\n",
            3,
            "\"../../../../etc/passwd\" has a `..` component",
        ),
        ("lrg", "fn,cat\n/etc/passwd,car\n", 2, "is absolute"),
        (
            "lrg",
            "fn,cat\na.jpg,car\nsub/./b.jpg,car\n",
            3,
            "`.` component",
        ),
    ];
    for &(kind, text, line, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{kind}.csv"));
        std::fs::write(&path, text).unwrap();
        let err = if kind == "bb" {
            read_bb(&path).map(|_| ())
        } else {
            read_lrg(&path).map(|_| ())
        }
        .unwrap_err();
        match &err {
            CsvError::BadRow {
                line: got,
                message: m,
                ..
            } => {
                assert_eq!(*got, line, "{text:?}: {err}");
                assert!(m.contains(message), "{text:?}: {err}");
                assert!(
                    err.to_string()
                        .starts_with(&format!("{}:{line}: ", path.display())),
                    "{err}"
                );
            }
            other => panic!("{text:?}: expected a bad row, got {other}"),
        }
    }
}

#[test]
fn file_names_leaving_the_images_folder_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bb.csv");
    std::fs::write(
        &path,
        "fn,bbox\n000012.jpg,96 155 269 350\nsub/000017.jpg,1 2 3 4\n../../../../etc/passwd,1 2 3 4\n",
    )
    .unwrap();
    let err = read_bb(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:4: ", path.display()))
            && err.contains("\"../../../../etc/passwd\"")
            && err.contains("inside the images folder"),
        "{err}"
    );
    // A name in a subfolder is fine.
    std::fs::write(&path, "fn,bbox\nsub/000017.jpg,1 2 3 4\n").unwrap();
    assert_eq!(read_bb(&path).unwrap()[0].file_name, "sub/000017.jpg");
}

#[test]
fn reading_a_missing_file_names_it() {
    let err = read_lrg(Path::new("/nonexistent/lrg.csv")).unwrap_err();
    assert!(
        matches!(err, CsvError::Io { .. }) && err.to_string().contains("/nonexistent/lrg.csv"),
        "{err}"
    );
}

#[test]
fn write_atomic_failing_or_panicking_writer_keeps_old_file_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bb.csv");
    std::fs::write(&path, "old content\n").unwrap();

    let err = write_atomic(&path, |out| {
        out.write_all(&vec![b'x'; 200_000])?; // past the buffer, so bytes reach the temp file
        Err(std::io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("disk on fire") && err.to_string().contains("bb.csv"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old content\n");
    assert_eq!(files_in(dir.path()), ["bb.csv"]);

    let panicked = std::panic::catch_unwind(|| {
        let _ = write_atomic(&path, |out| {
            out.write_all(&vec![b'y'; 200_000])?;
            panic!("writer bug");
        });
    });
    assert!(panicked.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old content\n");
    assert_eq!(files_in(dir.path()), ["bb.csv"]);

    write_atomic(&path, |out| out.write_all(b"new content\n")).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new content\n");
    assert_eq!(files_in(dir.path()), ["bb.csv"]);
}

#[test]
fn write_atomic_where_no_folder_can_be_made_names_the_path() {
    // The parent "folder" is a file: neither the folder nor the temp file can be made.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let path = dir.path().join("file/dir/lrg.csv");
    let err = write_atomic(&path, |out| out.write_all(b"x")).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn write_atomic_gives_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lrg.csv");
    write_atomic(&path, |out| out.write_all(b"x")).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert!(
        mode & 0o044 != 0 || mode == 0o600,
        "mode {mode:o}: others cannot read (umask aside)"
    );
    assert_ne!(mode, 0o600, "kept the temp file's 0600");
}

/// Run only as a child of `write_atomic_survives_the_process_being_killed`:
/// starts replacing the file, then dies without unwinding.
#[test]
#[ignore = "helper: run by write_atomic_survives_the_process_being_killed"]
fn child_aborts_while_writing() {
    let path = std::env::var_os("CSV_EXPORT_ABORT_TARGET").expect("run by the parent test");
    let _ = write_atomic(Path::new(&path), |out| {
        out.write_all(&vec![b'z'; 300_000])?;
        out.flush()?;
        std::process::abort();
    });
}

#[test]
fn write_atomic_survives_the_process_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lrg.csv");
    std::fs::write(&path, "fn,cat\nold.jpg,car\n").unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_aborts_while_writing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CSV_EXPORT_ABORT_TARGET", &path)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have died");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "fn,cat\nold.jpg,car\n"
    );
    // The dead writer's temp file stays (nothing can remove it), hidden and
    // named after its target, and holds the half-written bytes.
    let leftovers: Vec<String> = files_in(dir.path())
        .into_iter()
        .filter(|n| n != "lrg.csv")
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(
        leftovers[0].starts_with(".lrg.csv.") && leftovers[0].ends_with(".tmp"),
        "{leftovers:?}"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join(&leftovers[0]))
            .unwrap()
            .len(),
        300_000
    );
    assert_eq!(read_lrg(&path).unwrap(), vec![lrg("old.jpg", "car")]);
}

#[test]
fn write_atomic_makes_the_missing_folders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/lrg.csv");
    write_bytes_atomic(&path, b"fn,cat\n").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"fn,cat\n");
    assert_eq!(files_in(&dir.path().join("a/b")), ["lrg.csv"]);
}

#[test]
fn a_committed_folder_appears_whole_at_its_destination() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("data/synthetic");
    let staged = StagedDir::beside(&dest).unwrap();
    std::fs::write(staged.path().join("x.txt"), "x").unwrap();
    assert!(
        !dest.exists(),
        "nothing at the destination before the commit"
    );
    staged.commit().unwrap();
    assert_eq!(files_in(&dest), ["x.txt"]);
    assert_eq!(files_in(&dir.path().join("data")), ["synthetic"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode, 0o700, "kept the temp folder's 0700");
    }
}

#[test]
fn a_committed_entry_moves_alone_and_the_rest_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("weights.safetensors");
    let staged = StagedDir::beside(&dest).unwrap();
    std::fs::write(staged.path().join("out.safetensors"), "w").unwrap();
    std::fs::write(staged.path().join("log.txt"), "l").unwrap();
    staged.commit_entry(Path::new("out.safetensors")).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"w");
    assert_eq!(files_in(dir.path()), ["weights.safetensors"]);
}

#[test]
fn an_uncommitted_or_failed_stage_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let staged = StagedDir::beside(&dest).unwrap();
    std::fs::write(staged.path().join("half"), "h").unwrap();
    drop(staged);
    assert!(files_in(dir.path()).is_empty());

    // A destination that is a non-empty folder refuses the rename; the
    // error names it and the staged folder is removed.
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("old"), "o").unwrap();
    let staged = StagedDir::beside(&dest).unwrap();
    std::fs::write(staged.path().join("new"), "n").unwrap();
    let err = staged.commit().unwrap_err().to_string();
    assert!(err.contains(&dest.display().to_string()), "{err}");
    assert_eq!(files_in(dir.path()), ["out"]);
    assert_eq!(files_in(&dest), ["old"]);
}
