//! The lesson's two CSV files, written byte for byte as its pandas code
//! writes them and read back with every row checked:
//!
//! * `lrg.csv`, header `fn,cat`: each image's largest object's class;
//! * `bb.csv`, header `fn,bbox`: its box as `top left bottom right`, space
//!   separated, integral values without decimals (`96 155 269 350`).
//!
//! The lesson writes them with
//! `pd.DataFrame({...}, columns=[...]).to_csv(path, index=False)`: comma
//! separated, `\n` line ends, and a field quoted (with `"` doubled) only when
//! it holds a comma, a quote or a line break (Python's `QUOTE_MINIMAL`).
//!
//! [`write_atomic`] is the project's one way to write an artifact: a temp file
//! beside the target, fsync, rename, so a killed writer never leaves a
//! half-written file in place; [`StagedDir`] does the same for a folder
//! (`files.rs`).
//!
//! The training stages' CSVs (validation predictions, the lr_find curve and
//! its suggestion, per-epoch metrics) have their row types, headers and
//! writers here too ([`ValidationPredictions`], [`write_lr_find`],
//! [`write_metrics`]): the trainer writes them, viz reads them.
//!
//! [`ImagePrediction`] is what `cargo xtask predict` says about one user
//! image: JSON lines from the trainer, read back by xtask.
//!
//! [`check_file_name`] / [`ImagesDir`] are the project's one check that a
//! file name read from an input stays inside the images folder; the readers
//! here apply it to every `fn` they read.

mod files;
mod image_path;
mod image_predictions;
mod training_csvs;

pub use files::{create_parent, write_atomic, write_bytes_atomic, StagedDir};

pub use image_path::{check_file_name, image_path, FileNameError, ImagesDir};
pub use image_predictions::{
    read_jsonl, write_jsonl, write_predictions_csv, ClassScore, DetectedObject, ImagePrediction,
    PREDICTIONS_HEADER,
};
pub use training_csvs::{
    write_lr_find, write_metrics, BboxPrediction, ClassPrediction, CombinedPrediction,
    EpochMetrics, LrFindPoint, LrSuggestion, ValidationPredictions, BBOX_PREDICTIONS_HEADER,
    CLASS_PREDICTIONS_HEADER, COMBINED_PREDICTIONS_HEADER, LR_FIND_HEADER, METRICS_LEADING_COLUMNS,
    METRICS_SECONDS_COLUMN,
};

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A row of `lrg.csv`: an image and the class of its largest object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LrgRow {
    pub file_name: String,
    pub category: String,
}

/// A row of `bb.csv`: an image and its largest object's box,
/// `[top, left, bottom, right]` inclusive pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct BbRow {
    pub file_name: String,
    pub bbox: [f32; 4],
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A bad header or row; `line` is 1-based, the header being line 1.
    #[error("{}:{line}: {message}", path.display())]
    BadRow {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

pub const LRG_HEADER: [&str; 2] = ["fn", "cat"];
pub const BB_HEADER: [&str; 2] = ["fn", "bbox"];
pub const LRG_BB_HEADER: [&str; 3] = ["fn", "cat", "bbox"];

/// A row of `lrg_bb.csv`, `lrg.csv` and `bb.csv` joined on the file name: the
/// combined model's targets (the next lesson's `ConcatLblDataset`).
#[derive(Debug, Clone, PartialEq)]
pub struct LrgBbRow {
    pub file_name: String,
    pub category: String,
    pub bbox: [f32; 4],
}

/// Writes `lrg_bb.csv` atomically.
pub fn write_lrg_bb(path: &Path, rows: &[LrgBbRow]) -> Result<(), CsvError> {
    write_atomic(path, |out| {
        write_record(out, &LRG_BB_HEADER)?;
        for row in rows {
            let bbox = format_bbox(&row.bbox);
            write_record(out, &[&row.file_name, &row.category, &bbox])?;
        }
        Ok(())
    })
    .map_err(|source| CsvError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads `lrg_bb.csv`, checking the header and every row.
pub fn read_lrg_bb(path: &Path) -> Result<Vec<LrgBbRow>, CsvError> {
    read_rows(path, LRG_BB_HEADER, |[file_name, category, bbox]| {
        if category.is_empty() {
            return Err("empty category".to_owned());
        }
        Ok(LrgBbRow {
            file_name: file_name.to_owned(),
            category: category.to_owned(),
            bbox: parse_bbox(bbox)?,
        })
    })
}

/// Writes `lrg.csv` atomically.
pub fn write_lrg(path: &Path, rows: &[LrgRow]) -> Result<(), CsvError> {
    write_rows(
        path,
        LRG_HEADER,
        rows.iter()
            .map(|r| [r.file_name.as_str(), r.category.as_str()]),
    )
}

/// Writes `bb.csv` atomically.
pub fn write_bb(path: &Path, rows: &[BbRow]) -> Result<(), CsvError> {
    let mut bbox = String::new();
    write_atomic(path, |out| {
        write_record(out, &BB_HEADER)?;
        for row in rows {
            bbox.clear();
            push_bbox(&mut bbox, &row.bbox);
            write_record(out, &[row.file_name.as_str(), bbox.as_str()])?;
        }
        Ok(())
    })
    .map_err(|source| CsvError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes an `N`-column CSV (header plus rows) atomically, quoting as pandas does.
pub fn write_rows<'a, const N: usize>(
    path: &Path,
    header: [&str; N],
    rows: impl IntoIterator<Item = [&'a str; N]>,
) -> Result<(), CsvError> {
    write_atomic(path, |out| {
        write_record(out, &header)?;
        for row in rows {
            write_record(out, &row)?;
        }
        Ok(())
    })
    .map_err(|source| CsvError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes one CSV record with Python's `QUOTE_MINIMAL` rules and a `\n` end.
pub fn write_record(out: &mut dyn Write, fields: &[&str]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if field
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        {
            out.write_all(b"\"")?;
            out.write_all(field.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    // Python writes a lone empty field as `""` so the row is not blank.
    if fields.len() == 1 && fields[0].is_empty() {
        out.write_all(b"\"\"")?;
    }
    out.write_all(b"\n")
}

/// `[top, left, bottom, right]` as the lesson writes it: space separated,
/// integral values without decimals (`96 155 269 350`), others in the
/// shortest form that reads back exactly (`96.5`).
pub fn format_bbox(bbox: &[f32; 4]) -> String {
    let mut s = String::with_capacity(16);
    push_bbox(&mut s, bbox);
    s
}

fn push_bbox(out: &mut String, bbox: &[f32; 4]) {
    for (i, v) in bbox.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // `+ 0.0` turns -0.0 into 0.0, which Display would print as "-0".
        let _ = write!(out, "{}", v + 0.0);
    }
}

/// Parses a box written by [`format_bbox`]: four finite numbers with
/// `top <= bottom` and `left <= right`.
pub fn parse_bbox(text: &str) -> Result<[f32; 4], String> {
    let mut bbox = [0f32; 4];
    let mut parts = text.split(' ');
    for (i, slot) in bbox.iter_mut().enumerate() {
        let part = parts
            .next()
            .ok_or_else(|| format!("box {text:?} has {i} values, expected 4"))?;
        let v: f32 = part
            .parse()
            .map_err(|_| format!("box {text:?}: {part:?} is not a number"))?;
        if !v.is_finite() {
            return Err(format!("box {text:?}: {part:?} is not finite"));
        }
        *slot = v;
    }
    if parts.next().is_some() {
        return Err(format!("box {text:?} has more than 4 values"));
    }
    let [top, left, bottom, right] = bbox;
    if top > bottom || left > right {
        return Err(format!(
            "box {text:?} is not top left bottom right (top > bottom or left > right)"
        ));
    }
    Ok(bbox)
}

/// Reads `lrg.csv`, checking the header and every row.
pub fn read_lrg(path: &Path) -> Result<Vec<LrgRow>, CsvError> {
    read_rows(path, LRG_HEADER, |[file_name, category]| {
        if category.is_empty() {
            return Err("empty category".to_owned());
        }
        Ok(LrgRow {
            file_name: file_name.to_owned(),
            category: category.to_owned(),
        })
    })
}

/// Reads `bb.csv`, checking the header and every row.
pub fn read_bb(path: &Path) -> Result<Vec<BbRow>, CsvError> {
    read_rows(path, BB_HEADER, |[file_name, bbox]| {
        Ok(BbRow {
            file_name: file_name.to_owned(),
            bbox: parse_bbox(bbox)?,
        })
    })
}

/// Reads a two-column CSV with the given header; `parse` turns each row
/// (`fn` already checked non-empty, and, where the first column is `fn`, a
/// name inside the images folder by [`check_file_name`]) into a value or a
/// message, which the error then places at its file and line.
pub fn read_rows<T, const N: usize>(
    path: &Path,
    header: [&str; N],
    mut parse: impl FnMut([&str; N]) -> Result<T, String>,
) -> Result<Vec<T>, CsvError> {
    let data = std::fs::read(path).map_err(|source| CsvError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data.as_slice());
    let bad = |line: u64, message: String| CsvError::BadRow {
        path: path.to_owned(),
        line,
        message,
    };
    let mut record = csv::StringRecord::new();
    let mut rows = Vec::new();
    let mut seen_header = false;
    let (mut line, mut counted_to) = (1u64, 0usize);
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(line, |p| p.line());
            match e.into_kind() {
                csv::ErrorKind::Io(source) => CsvError::Io {
                    path: path.to_owned(),
                    source,
                },
                kind => bad(line, format!("{kind:?}")),
            }
        })?;
        if !more {
            break;
        }
        // The csv crate's record position is where the previous terminator
        // ended: after a CRLF's `\r`, or before a skipped blank line (which it
        // drops silently; the lesson's files never have one). Lines are counted
        // here so that both come out right.
        let mut start = record.position().map_or(0, |p| p.byte() as usize);
        if start > 0 && data[start - 1] == b'\r' && data.get(start) == Some(&b'\n') {
            start += 1;
        }
        line += data[counted_to..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        counted_to = start;
        if matches!(data.get(start), Some(b'\n' | b'\r')) {
            return Err(bad(line, "blank line".to_owned()));
        }
        if !seen_header {
            if record.iter().ne(header.iter().copied()) {
                return Err(bad(
                    line,
                    format!(
                        "header is {:?}, expected {:?}",
                        record.iter().collect::<Vec<_>>(),
                        header
                    ),
                ));
            }
            seen_header = true;
            continue;
        }
        if record.len() != N {
            return Err(bad(
                line,
                format!(
                    "{} fields, expected {N} ({})",
                    record.len(),
                    header.join(",")
                ),
            ));
        }
        let fields: [&str; N] = std::array::from_fn(|i| &record[i]);
        if fields[0].is_empty() {
            return Err(bad(line, "empty file name".to_owned()));
        }
        if header[0] == "fn" {
            check_file_name(fields[0]).map_err(|e| bad(line, e.to_string()))?;
        }
        rows.push(parse(fields).map_err(|m| bad(line, m))?);
    }
    if !seen_header {
        return Err(bad(
            1,
            format!("empty file, expected the header {}", header.join(",")),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_formats_like_the_lesson_and_parses_back() {
        assert_eq!(format_bbox(&[96.0, 155.0, 269.0, 350.0]), "96 155 269 350");
        assert_eq!(format_bbox(&[-0.0, 0.5, 1e6, 12.25]), "0 0.5 1000000 12.25");
        for bbox in [
            [96.0, 155.0, 269.0, 350.0],
            [0.0, 0.5, 3.125, 7.1],
            [1.0, 2.0, 1.0, 2.0],
        ] {
            assert_eq!(parse_bbox(&format_bbox(&bbox)), Ok(bbox));
        }
    }

    #[test]
    fn parse_bbox_refuses_bad_boxes() {
        for bad in [
            "",
            "1 2 3",
            "1 2 3 4 5",
            "1 2 x 4",
            "1  2 3 4",
            "5 0 4 9",
            "0 5 9 4",
            "1 2 inf 4",
            "1 2 NaN 4",
        ] {
            assert!(parse_bbox(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn records_quote_like_python_quote_minimal() {
        let cases: &[(&[&str], &str)] = &[
            (&["000012.jpg", "car"], "000012.jpg,car\n"),
            (&["a,b.jpg", "x"], "\"a,b.jpg\",x\n"),
            (&["say \"hi\".jpg", "x"], "\"say \"\"hi\"\".jpg\",x\n"),
            (&["two\nlines", "x\ry"], "\"two\nlines\",\"x\ry\"\n"),
            (&["", "x"], ",x\n"),
            (&["a b", " c "], "a b, c \n"),
            (&[""], "\"\"\n"),
        ];
        for (fields, expected) in cases {
            let mut out = Vec::new();
            write_record(&mut out, fields).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), *expected, "{fields:?}");
        }
    }
}
