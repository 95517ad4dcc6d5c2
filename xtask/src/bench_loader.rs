//! `cargo xtask bench loader`: the `augment` loader against the Python peers of
//! `../shared/bench/peer_loader.py` on the same VOC images, in one invocation
//! (absolute speeds drift between runs and machines; the ratio is the result).
//!
//! Prints images/s of the loader (for each `--threads` count) and of each peer,
//! the ratio to the fastest peer, single-core decode-only speeds, a per-phase
//! profile of one thread, and peak memory (VmHWM for the loader, getrusage for
//! the peers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::flags::BenchLoaderArgs;
use augment::{
    AugmentDraw, AugmentParams, BadImage, Item, JpegDecoder, JpegScale, Loader, LoaderConfig,
};

pub fn run(python: &Path, args: &BenchLoaderArgs) -> Result<()> {
    let root = crate::cache::project_root();
    let voc = root.join(&args.voc).join("VOCdevkit/VOC2007");
    let img_dir = voc.join("JPEGImages");
    let list = voc.join("ImageSets/Main/train.txt");
    let peer_script = root.join(&args.bench_dir).join("peer_loader.py");
    if !list.is_file() {
        bail!(
            "{} is absent: the loader benchmark needs the shared VOC 2007 data",
            list.display()
        );
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "loader benchmark: {} images of {}, batch {}, {} px, lesson augmentations",
        args.images,
        list.display(),
        args.batch,
        args.size
    );
    println!(
        "machine: {cores} cores, load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let paths = first_existing(&list, &img_dir, args.images)?;
    // Page-cache every file first, so neither side pays for disk reads.
    let files: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<_>>()?;
    let items = Arc::new(peer_items(&paths)?);

    println!("\n== decode only, one thread, from memory (images/s per core)");
    let decode = decode_speeds(&files, args.size)?;
    for (name, rate) in &decode {
        println!("{name:44} {rate:8.1}");
    }

    println!("\n== one loader thread, per phase (ms per image)");
    phase_profile(&paths, args.size)?;

    println!(
        "\n== augment loader (median of {} epochs after one warm-up)",
        args.repeats.max(1)
    );
    let mut thread_counts = args.threads.clone();
    thread_counts.push(args.workers);
    thread_counts.sort_unstable();
    thread_counts.dedup();
    let mut loader_rates = Vec::new();
    for &threads in &thread_counts {
        let (rate, peak_kb) = time_loader(&items, args, threads)?;
        println!(
            "augment threads={threads:<3} {rate:8.1} img/s   peak RSS (VmHWM) {:7.1} MB",
            peak_kb as f64 / 1024.0
        );
        loader_rates.push((threads, rate));
    }
    let loader_rate = loader_rates
        .iter()
        .find(|(t, _)| *t == args.workers)
        .map(|(_, r)| *r)
        .expect("workers count was timed");

    let used_decode = decode
        .iter()
        .find(|(n, _)| n.contains("as the loader"))
        .map(|(_, r)| *r)
        .unwrap_or(f64::NAN);
    let full_decode = decode
        .iter()
        .find(|(n, _)| n.contains("full size"))
        .map(|(_, r)| *r)
        .unwrap_or(f64::NAN);
    println!(
        "loader at {w} threads = {:.0}% of {w}x the decode-only rate of the decode it uses, {:.0}% of {w}x plain full-size decoding",
        100.0 * loader_rate / (args.workers as f64 * used_decode),
        100.0 * loader_rate / (args.workers as f64 * full_decode),
        w = args.workers,
    );

    let peers: Vec<&String> = args.peers.iter().filter(|p| !p.is_empty()).collect();
    if peers.is_empty() {
        return Ok(());
    }
    println!(
        "\n== Python peers ({} DataLoader workers, {})",
        args.workers,
        python.display()
    );
    let mut peer_rates = Vec::new();
    for peer in peers {
        match run_peer(python, &peer_script, &img_dir, &list, args, peer) {
            Ok(result) => {
                println!(
                    "{peer:8} {:8.1} img/s   peak RSS main {:7.1} MB, largest worker {:7.1} MB",
                    result.rate,
                    result.self_kb as f64 / 1024.0,
                    result.children_kb as f64 / 1024.0
                );
                peer_rates.push((peer.clone(), result.rate));
            }
            Err(e) => println!("{peer:8} failed: {e:#}"),
        }
    }
    let Some((fastest, fastest_rate)) = peer_rates
        .iter()
        .cloned()
        .max_by(|a, b| a.1.total_cmp(&b.1))
    else {
        bail!("no peer ran");
    };
    println!("\n== summary");
    for (threads, rate) in &loader_rates {
        println!("augment threads={threads:<3} {rate:8.1} img/s = {:5.2}x the fastest peer ({fastest}, {fastest_rate:.1} img/s, {} workers)", rate / fastest_rate, args.workers);
    }
    Ok(())
}

/// The first `n` ids of the list whose JPEG exists (as peer_loader.py picks them).
pub(crate) fn first_existing(list: &Path, img_dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| img_dir.join(format!("{id}.jpg")))
        .filter(|p| p.exists())
        .take(n)
        .collect())
}

/// Items with the peers' box `[0.2h, 0.2w, 0.8h, 0.8w]`.
fn peer_items(paths: &[PathBuf]) -> Result<Vec<Item>> {
    paths
        .iter()
        .map(|path| {
            let (h, w) = augment::read_image_size(path)?;
            let (h, w) = (h as f32, w as f32);
            Ok(Item {
                path: path.clone(),
                class: Some(0),
                bbox: Some([0.2 * h, 0.2 * w, 0.8 * h, 0.8 * w]),
                ..Item::default()
            })
        })
        .collect()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn decode_speeds(files: &[Vec<u8>], size: u32) -> Result<Vec<(String, f64)>> {
    let mut decoder = JpegDecoder::new().map_err(anyhow::Error::msg)?;
    let mut results = Vec::new();
    let mut time = |name: &str, f: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<()> {
        let start = Instant::now();
        for bytes in files {
            f(bytes)?;
        }
        results.push((name.to_string(), rate(files.len(), start.elapsed())));
        Ok(())
    };
    let mut jpeg = |name: &str, scale: JpegScale| -> Result<()> {
        time(name, &mut |b| {
            decoder
                .decode_at(b, scale)
                .map(|_| ())
                .map_err(anyhow::Error::msg)
        })
    };
    jpeg("zune-jpeg full size", JpegScale::Full)?;
    jpeg(
        &format!("as the loader: 1/8,1/4,1/2 >= {size} else full"),
        JpegScale::Covering { side: size },
    )?;
    jpeg(
        "jpeg-decoder 1/2 (below target, reference)",
        JpegScale::Eighths(4),
    )?;
    time(
        "image crate full size (zune-jpeg, new decoder each)",
        &mut |b| {
            augment::decode_with_image_crate(b)
                .map(|_| ())
                .map_err(anyhow::Error::msg)
        },
    )?;
    Ok(results)
}

/// One thread doing the loader's work phase by phase, to show where the time goes.
fn phase_profile(paths: &[PathBuf], size: u32) -> Result<()> {
    let mut decoder = JpegDecoder::new().map_err(anyhow::Error::msg)?;
    let mut squasher = augment::Squasher::new();
    let params = AugmentParams::default();
    let pixels = (size * size) as usize;
    let (mut squashed, mut warped, mut out) = (
        vec![0u8; pixels * 3],
        vec![0u8; pixels * 3],
        vec![0f32; pixels * 3],
    );
    let mut phases = [Duration::ZERO; 5];
    let start_all = Instant::now();
    for (index, path) in paths.iter().enumerate() {
        let t = Instant::now();
        let bytes = std::fs::read(path)?;
        phases[0] += t.elapsed();
        let t = Instant::now();
        let (dims, rgb) = decoder
            .decode(&bytes, Some(size))
            .map_err(anyhow::Error::msg)?;
        phases[1] += t.elapsed();
        let t = Instant::now();
        squasher
            .squash(rgb, dims.width, dims.height, size, &mut squashed)
            .map_err(anyhow::Error::msg)?;
        phases[2] += t.elapsed();
        let draw = AugmentDraw::for_item(&params, 0, 0, index);
        let t = Instant::now();
        let forward = draw.affine(size, size);
        // As the loader: a flip alone mirrors the rows, anything else warps.
        if draw.is_flip_only() {
            augment::hflip_into(&squashed, size, &mut warped);
        } else {
            augment::warp_affine_reflect(&squashed, size, size, &forward, &mut warped);
        }
        let bbox = augment::box_after_affine([10.0, 10.0, 100.0, 100.0], &forward, size, size);
        std::hint::black_box(bbox);
        phases[3] += t.elapsed();
        let t = Instant::now();
        augment::normalize_into(
            &warped,
            Some((draw.brightness, draw.contrast)),
            &augment::Normalisation::IMAGENET,
            &mut out,
        );
        phases[4] += t.elapsed();
    }
    let total = start_all.elapsed();
    let per_image = |d: Duration| d.as_secs_f64() * 1e3 / paths.len() as f64;
    for (name, d) in [
        "read file",
        "decode (as the loader)",
        "squash (box filter)",
        "rotate+flip warp, box",
        "lighting+normalise to CHW f32",
    ]
    .iter()
    .zip(phases)
    {
        println!("{name:44} {:7.3}", per_image(d));
    }
    println!(
        "{:44} {:7.3}  ({:.0} images/s on one core)",
        "total",
        per_image(total),
        rate(paths.len(), total)
    );
    Ok(())
}

/// Median images/s over `repeats` epochs, and the peak RSS in kB while they ran.
fn time_loader(
    items: &Arc<Vec<Item>>,
    args: &BenchLoaderArgs,
    threads: usize,
) -> Result<(f64, u64)> {
    let cfg = LoaderConfig {
        size: args.size,
        batch_size: args.batch,
        workers: threads,
        prefetch: 2,
        shuffle: true,
        seed: 0,
        augment: Some(AugmentParams::default()),
        drop_last: false,
        on_bad_image: BadImage::Fail,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::clone(items), cfg);
    reset_peak_rss();
    let mut rates = Vec::new();
    for epoch in 0..=args.repeats.max(1) as u64 {
        let start = Instant::now();
        let mut n = 0;
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            std::hint::black_box(&batch.x);
            n += batch.n;
            // as a trainer does once it has copied x into a tensor
            loader.recycle(batch);
        }
        if epoch > 0 {
            rates.push(rate(n, start.elapsed()));
        }
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates[rates.len() / 2], peak_rss_kb()))
}

/// Resets VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs); best effort.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct PeerResult {
    rate: f64,
    self_kb: u64,
    children_kb: u64,
}

/// Runs the peer script for one pipeline inside a wrapper that prints the
/// peak RSS of the main process and of its largest DataLoader worker.
fn run_peer(
    python: &Path,
    script: &Path,
    img_dir: &Path,
    list: &Path,
    args: &BenchLoaderArgs,
    peer: &str,
) -> Result<PeerResult> {
    const WRAPPER: &str = "import resource, runpy, sys\n\
        script = sys.argv[1]\n\
        sys.argv = sys.argv[1:]\n\
        runpy.run_path(script, run_name='__main__')\n\
        me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n\
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n\
        print(f'PEAK_RSS_KB {me} {kids}', flush=True)\n";
    let output = Command::new(python)
        .arg("-c")
        .arg(WRAPPER)
        .arg(script)
        .arg(img_dir)
        .arg(list)
        .arg(args.images.to_string())
        .arg(args.workers.to_string())
        .arg(peer)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} exited with {}: {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    // "cv2                          workers=2 images=1000    439.1 img/s"
    let rate = stdout
        .lines()
        .find(|l| l.ends_with("img/s"))
        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .with_context(|| format!("no img/s line in the peer's output: {stdout}"))?;
    let (self_kb, children_kb) = stdout
        .lines()
        .find_map(|l| {
            let mut it = l.strip_prefix("PEAK_RSS_KB ")?.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .unwrap_or((0, 0));
    Ok(PeerResult {
        rate,
        self_kb,
        children_kb,
    })
}
