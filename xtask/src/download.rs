//! `cargo xtask data pascal`: fetch Pascal VOC 2007 (trainval images and XML)
//! and the lesson's COCO-style JSON into the lesson's layout:
//!
//! ```text
//! dest/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets,...}
//! dest/pascal_train2007.json  (and the zip's other JSON files)
//! ```
//!
//! Downloads go to `dest/.downloads/<name>.part` and resume with an HTTP
//! `Range` request, within a run (a dropped connection is retried) and across
//! runs (a killed run leaves its `.part`). A finished download is checked
//! against its MD5 where one is known, then extracted into a temp folder inside
//! `dest` and renamed into place, so `dest` never holds a half-extracted
//! dataset. Each archive is deleted once extracted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use md5::{Digest, Md5};

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub url: String,
    /// Name under `dest/.downloads/`.
    pub file_name: String,
    /// Lower-case hex MD5 of the whole file, where published.
    pub md5: Option<String>,
}

/// Where the two archives come from (tests point these at a local server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSource {
    /// The VOC 2007 trainval tar (holds `VOCdevkit/VOC2007/...`).
    pub voc_tar: Download,
    /// The zip holding the lesson's `pascal_train2007.json`.
    pub json_zip: Download,
}

impl DownloadSource {
    /// The archives the lesson uses.
    pub fn official() -> Self {
        Self {
            voc_tar: Download {
                url: "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar"
                    .into(),
                file_name: "VOCtrainval_06-Nov-2007.tar".into(),
                md5: Some("c52e279531787c972589f7e41ab4ae64".into()),
            },
            json_zip: Download {
                url: "https://storage.googleapis.com/coco-dataset/external/PASCAL_VOC.zip".into(),
                file_name: "PASCAL_VOC.zip".into(),
                // Not published; the zip's own CRCs check its content on extraction.
                md5: None,
            },
        }
    }
}

/// Attempts per download within one run; each resumes where the last stopped.
const ATTEMPTS: usize = 4;

pub fn run(dest: &Path, source: &DownloadSource) -> Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let downloads = dest.join(".downloads");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build(),
    );

    let voc = dest.join("VOCdevkit/VOC2007");
    if voc.is_dir() {
        println!("{} is already there", voc.display());
    } else {
        let tar = fetch(&agent, &source.voc_tar, &downloads)?;
        extract_voc_tar(&tar, dest)?;
        fs::remove_file(&tar).with_context(|| format!("removing {}", tar.display()))?;
        println!("extracted {}", voc.display());
    }

    let json = dest.join("pascal_train2007.json");
    if json.is_file() {
        println!("{} is already there", json.display());
    } else {
        let zip = fetch(&agent, &source.json_zip, &downloads)?;
        let written = extract_json_zip(&zip, dest)?;
        fs::remove_file(&zip).with_context(|| format!("removing {}", zip.display()))?;
        println!("extracted {}", written.join(", "));
    }
    // Only empty once every archive is extracted; a failed run keeps its parts.
    let _ = fs::remove_dir(&downloads);
    Ok(())
}

/// Downloads `d` into `dir`, resuming a `.part`, and returns the verified file.
fn fetch(agent: &ureq::Agent, d: &Download, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let done = dir.join(&d.file_name);
    if done.is_file() {
        match verify(&done, d) {
            Ok(()) => return Ok(done),
            Err(e) => {
                eprintln!("{e:#}; downloading again");
                fs::remove_file(&done)?;
            }
        }
    }
    let part = dir.join(format!("{}.part", d.file_name));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download_part(agent, d, &part) {
            Ok(()) => break,
            Err(e) if attempt < ATTEMPTS && e.downcast_ref::<Interrupted>().is_some() => {
                eprintln!("{e:#}; resuming (attempt {} of {ATTEMPTS})", attempt + 1);
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
            Err(e) => {
                let have = part.metadata().map(|m| m.len()).unwrap_or(0);
                return Err(e.context(format!(
                    "downloading {} ({have} bytes kept in {}; rerun to resume)",
                    d.url,
                    part.display()
                )));
            }
        }
    }
    if let Err(e) = verify(&part, d) {
        // A corrupt file cannot be resumed into a good one: start over next time.
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, &done)
        .with_context(|| format!("renaming {} to {}", part.display(), done.display()))?;
    Ok(done)
}

/// A transfer that stopped part way (connection dropped, read error): worth resuming.
#[derive(Debug)]
struct Interrupted(String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Brings `part` up to the full file with one request.
fn download_part(agent: &ureq::Agent, d: &Download, part: &Path) -> Result<()> {
    let have = part.metadata().map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(&d.url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let response = request
        .call()
        .map_err(|e| Interrupted(format!("requesting {}: {e}", d.url)))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let start = match status {
        206 => {
            let range = header("content-range").unwrap_or_default();
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok())
                .with_context(|| format!("{}: 206 with a bad Content-Range {range:?}", d.url))?;
            ensure!(
                start == have,
                "{}: asked for bytes {have}- but got {range:?}",
                d.url
            );
            have
        }
        // The server ignores ranges: start over.
        200 => 0,
        // Nothing after `have`: the part is already whole (the checksum decides).
        416 if have > 0 => return Ok(()),
        _ => bail!("{}: HTTP {status}", d.url),
    };
    let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(part)
        .with_context(|| format!("opening {}", part.display()))?;

    let bar = indicatif::ProgressBar::new(length.map_or(0, |l| l + start));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(d.file_name.clone());
    bar.set_position(start);

    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.sync_all().ok();
                bar.abandon();
                return Err(Interrupted(format!(
                    "{}: transfer stopped after {} bytes: {e}",
                    d.url,
                    start + received
                ))
                .into());
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part.display()))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", part.display()))?;
    bar.finish_and_clear();
    if let Some(length) = length {
        if received < length {
            return Err(Interrupted(format!(
                "{}: transfer stopped after {} of {} bytes",
                d.url,
                start + received,
                start + length
            ))
            .into());
        }
    }
    Ok(())
}

/// Checks the MD5 of `path` where `d` has one.
fn verify(path: &Path, d: &Download) -> Result<()> {
    let Some(expected) = &d.md5 else {
        return Ok(());
    };
    let got = md5_hex(path)?;
    ensure!(
        got.eq_ignore_ascii_case(expected),
        "{}: checksum mismatch: MD5 is {got}, expected {expected} (the file was removed)",
        path.display()
    );
    Ok(())
}

fn md5_hex(path: &Path) -> Result<String> {
    let mut file = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let mut hasher = Md5::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Unpacks the tar into a folder staged beside `dest/VOCdevkit/VOC2007`, then
/// renames the tar's `VOCdevkit/VOC2007` into place (the rest goes).
fn extract_voc_tar(tar: &Path, dest: &Path) -> Result<()> {
    let voc2007 = Path::new("VOCdevkit/VOC2007");
    let staging = csv_export::StagedDir::beside(&dest.join(voc2007))?;
    let file = File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    // `unpack` refuses entries that would land outside the folder.
    tar::Archive::new(BufReader::with_capacity(1 << 20, file))
        .unpack(staging.path())
        .with_context(|| format!("extracting {}", tar.display()))?;
    ensure!(
        staging.path().join(voc2007).join("Annotations").is_dir(),
        "{}: holds no VOCdevkit/VOC2007/Annotations",
        tar.display()
    );
    staging.commit_entry(voc2007)?;
    Ok(())
}

/// Writes every `*.json` of the zip (wherever it sits inside) to `dest`,
/// each atomically; `pascal_train2007.json` must be among them.
fn extract_json_zip(zip_path: &Path, dest: &Path) -> Result<Vec<String>> {
    let file = File::open(zip_path).with_context(|| format!("opening {}", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("reading {}", zip_path.display()))?;
    let mut written = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("reading {}", zip_path.display()))?;
        let Some(name) = entry
            .enclosed_name()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        else {
            continue;
        };
        if !entry.is_file() || !name.ends_with(".json") {
            continue;
        }
        let target = dest.join(&name);
        csv_export::write_atomic(&target, |out| io::copy(&mut entry, out).map(|_| ()))
            .with_context(|| format!("extracting {name} from {}", zip_path.display()))?;
        written.push(name);
    }
    ensure!(
        written.iter().any(|n| n == "pascal_train2007.json"),
        "{}: holds no pascal_train2007.json (found: {written:?})",
        zip_path.display()
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// What the server saw: path and `Range` header of each request.
    type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A tiny HTTP/1.1 server on 127.0.0.1 serving `files`, honouring
    /// `Range: bytes=N-` unless `ranges` is false; with `cut = Some((path, k))`
    /// the first response for `path` stops after `k` body bytes.
    fn serve(
        files: HashMap<String, Vec<u8>>,
        ranges: bool,
        cut: Option<(&str, usize)>,
    ) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let seen = log.clone();
        let mut cut = cut.map(|(p, k)| (p.to_owned(), k));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = respond(stream, &files, ranges, &mut cut, &seen);
            }
        });
        (base, log)
    }

    fn respond(
        mut stream: TcpStream,
        files: &HashMap<String, Vec<u8>>,
        ranges: bool,
        cut: &mut Option<(String, usize)>,
        log: &Log,
    ) -> io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let mut range = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("range") {
                    range = Some(value.trim().to_owned());
                }
            }
        }
        log.lock().unwrap().push((path.clone(), range.clone()));
        let Some(data) = files.get(&path) else {
            return stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        };
        let from: usize = match (&range, ranges) {
            (Some(r), true) => r
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap(),
            _ => 0,
        };
        if from >= data.len() && from > 0 {
            let head = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", data.len());
            return stream.write_all(head.as_bytes());
        }
        let body = &data[from..];
        let head = if from > 0 {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len() - 1,
                data.len(),
                body.len()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
        };
        stream.write_all(head.as_bytes())?;
        match cut.take_if(|(p, _)| *p == path) {
            Some((_, k)) => stream.write_all(&body[..k])?, // then hang up mid-body
            None => stream.write_all(body)?,
        }
        stream.flush()
    }

    /// A VOC-like tar (about 40 KB) and a zip like PASCAL_VOC.zip.
    fn archives() -> (Vec<u8>, Vec<u8>) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, data).unwrap();
        };
        add(
            "VOCdevkit/VOC2007/Annotations/000001.xml",
            b"<annotation><filename>000001.jpg</filename></annotation>",
        );
        add("VOCdevkit/VOC2007/ImageSets/Main/train.txt", b"000001\n");
        let pixels: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        add("VOCdevkit/VOC2007/JPEGImages/000001.jpg", &pixels);
        let tar = tar.into_inner().unwrap();

        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = zip::write::FileOptions::default();
        zip.add_directory("PASCAL_VOC/", options).unwrap();
        for (name, text) in [
            ("pascal_train2007.json", "{\"images\": []}"),
            ("pascal_val2007.json", "{}"),
        ] {
            zip.start_file(format!("PASCAL_VOC/{name}"), options)
                .unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        (tar, zip.finish().unwrap().into_inner())
    }

    fn md5_of(data: &[u8]) -> String {
        Md5::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn source(base: &str, tar: &[u8]) -> DownloadSource {
        DownloadSource {
            voc_tar: Download {
                url: format!("{base}/voc.tar"),
                file_name: "voc.tar".into(),
                md5: Some(md5_of(tar)),
            },
            json_zip: Download {
                url: format!("{base}/PASCAL_VOC.zip"),
                file_name: "PASCAL_VOC.zip".into(),
                md5: None,
            },
        }
    }

    fn files(tar: &[u8], zip: &[u8]) -> HashMap<String, Vec<u8>> {
        HashMap::from([
            ("/voc.tar".to_owned(), tar.to_vec()),
            ("/PASCAL_VOC.zip".to_owned(), zip.to_vec()),
        ])
    }

    fn requests_for(log: &Log, path: &str) -> Vec<Option<String>> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn interrupted_download_resumes_with_a_range_and_extracts() {
        let (tar, zip) = archives();
        let (base, log) = serve(files(&tar, &zip), true, Some(("/voc.tar", 10_000)));
        let dest = tempfile::tempdir().unwrap();
        run(dest.path(), &source(&base, &tar)).unwrap();

        assert_eq!(
            requests_for(&log, "/voc.tar"),
            [None, Some("bytes=10000-".to_owned())]
        );
        assert_eq!(requests_for(&log, "/PASCAL_VOC.zip"), [None]);
        let voc = dest.path().join("VOCdevkit/VOC2007");
        assert_eq!(
            fs::read_to_string(voc.join("Annotations/000001.xml")).unwrap(),
            "<annotation><filename>000001.jpg</filename></annotation>"
        );
        assert_eq!(
            fs::read(voc.join("JPEGImages/000001.jpg")).unwrap().len(),
            40_000
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("pascal_train2007.json")).unwrap(),
            "{\"images\": []}"
        );
        // Archives and staging are gone; only the dataset remains.
        assert_eq!(
            names_in(dest.path()),
            ["VOCdevkit", "pascal_train2007.json", "pascal_val2007.json"]
        );

        // A second run finds everything in place and asks for nothing.
        let before = log.lock().unwrap().len();
        run(dest.path(), &source(&base, &tar)).unwrap();
        assert_eq!(log.lock().unwrap().len(), before);
    }

    #[test]
    fn a_part_left_by_a_killed_run_is_resumed() {
        let (tar, zip) = archives();
        let (base, log) = serve(files(&tar, &zip), true, None);
        let dest = tempfile::tempdir().unwrap();
        fs::create_dir_all(dest.path().join(".downloads")).unwrap();
        fs::write(dest.path().join(".downloads/voc.tar.part"), &tar[..5000]).unwrap();
        run(dest.path(), &source(&base, &tar)).unwrap();
        assert_eq!(
            requests_for(&log, "/voc.tar"),
            [Some("bytes=5000-".to_owned())]
        );
        assert!(dest
            .path()
            .join("VOCdevkit/VOC2007/Annotations/000001.xml")
            .is_file());
    }

    #[test]
    fn a_server_that_ignores_ranges_restarts_the_download() {
        let (tar, zip) = archives();
        let (base, log) = serve(files(&tar, &zip), false, None);
        let dest = tempfile::tempdir().unwrap();
        fs::create_dir_all(dest.path().join(".downloads")).unwrap();
        fs::write(dest.path().join(".downloads/voc.tar.part"), &tar[..5000]).unwrap();
        run(dest.path(), &source(&base, &tar)).unwrap();
        assert_eq!(
            requests_for(&log, "/voc.tar"),
            [Some("bytes=5000-".to_owned())]
        );
        assert_eq!(
            fs::read(dest.path().join("VOCdevkit/VOC2007/JPEGImages/000001.jpg"))
                .unwrap()
                .len(),
            40_000
        );
    }

    #[test]
    fn checksum_mismatch_is_an_error_and_leaves_nothing_extracted() {
        let (tar, zip) = archives();
        let (base, _log) = serve(files(&tar, &zip), true, None);
        let dest = tempfile::tempdir().unwrap();
        let mut wrong = source(&base, &tar);
        wrong.voc_tar.md5 = Some(md5_of(b"something else"));
        let err = format!("{:#}", run(dest.path(), &wrong).unwrap_err());
        assert!(
            err.contains("checksum mismatch") && err.contains("voc.tar"),
            "{err}"
        );
        assert!(!dest.path().join("VOCdevkit").exists());
        // The corrupt part is dropped so that the next run starts clean.
        assert_eq!(
            names_in(&dest.path().join(".downloads")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn http_errors_and_archives_without_the_data_are_reported() {
        let (tar, zip) = archives();
        let (base, _log) = serve(files(&tar, &zip), true, None);
        let dest = tempfile::tempdir().unwrap();
        let mut missing = source(&base, &tar);
        missing.voc_tar.url = format!("{base}/nope.tar");
        let err = format!("{:#}", run(dest.path(), &missing).unwrap_err());
        assert!(
            err.contains("HTTP 404") && err.contains("/nope.tar"),
            "{err}"
        );

        // The zip served where the tar should be.
        let mut swapped = source(&base, &tar);
        swapped.voc_tar = Download {
            url: format!("{base}/PASCAL_VOC.zip"),
            file_name: "voc.tar".into(),
            md5: None,
        };
        let err = format!("{:#}", run(dest.path(), &swapped).unwrap_err());
        assert!(err.contains("voc.tar"), "{err}");
        assert!(!dest.path().join("VOCdevkit/VOC2007").exists());
        assert!(
            names_in(dest.path())
                .iter()
                .all(|n| !n.starts_with(".extract-")),
            "{:?}",
            names_in(dest.path())
        );
    }
}
