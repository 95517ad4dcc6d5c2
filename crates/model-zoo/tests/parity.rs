//! The Rust models compute what PyTorch computes from the same weights and input.
//!
//! The reference side runs `tests/reference.py` with the peer venv's Python
//! (torch + torchvision); the tests skip, saying why, where it or the data
//! they need is absent.

use model_zoo::{load_backbone, Arch, HeadSpec, Net};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LESSON8_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lesson8");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/lesson8")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peer_python() -> Option<PathBuf> {
    let python = std::env::var_os("LESSON8_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("peer-venv/bin/python"));
    python.exists().then_some(python)
}

fn voc_images() -> Option<PathBuf> {
    shared_voc::voc2007().map(|dir| dir.join(shared_voc::IMAGES))
}

fn run(cmd: &mut Command) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write_f32(path: &Path, tensor: &Tensor) {
    let values = Vec::<f32>::try_from(tensor.flatten(0, -1)).unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path, shape: &[i64]) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// Runs the reference backbone on `input` and returns its outputs by name.
fn reference(python: &Path, arch: Arch, weights: &Path, input: &Tensor, dir: &Path) {
    let input_path = dir.join("input.f32");
    write_f32(&input_path, input);
    let size = input.size();
    run(Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py"))
        .arg("forward")
        .arg(arch.name())
        .arg(weights)
        .arg(&input_path)
        .args([size[0], size[2], size[3]].map(|v| v.to_string()))
        .arg(dir));
}

/// Largest absolute difference relative to the largest reference value, and
/// the smallest per-sample cosine similarity.
fn compare(ours: &Tensor, theirs: &Tensor) -> (f64, f64) {
    assert_eq!(ours.size(), theirs.size());
    let rel = (ours - theirs).abs().max().double_value(&[]) / theirs.abs().max().double_value(&[]);
    let a = ours.flatten(1, -1);
    let b = theirs.flatten(1, -1);
    let cos = Tensor::cosine_similarity(&a, &b, 1, 1e-12)
        .min()
        .double_value(&[]);
    (rel, cos)
}

#[test]
fn resnet34_matches_torchvision() {
    let Some(python) = peer_python() else {
        eprintln!("skipping: no peer Python with torch (cargo xtask peer-setup)");
        return;
    };
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("resnet34.pth");
    let weights = dir.path().join("resnet34.safetensors");
    run(Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py"))
        .arg("make-resnet34")
        .arg(&pth));
    run(Command::new("python3")
        .arg(repo_root().join("xtask/py/pth_to_safetensors.py"))
        .arg(&pth)
        .arg(&weights));

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(
        &vs.root(),
        Arch::ResNet34,
        HeadSpec::FlattenLinear { outputs: 4 },
        96,
    );
    let report = load_backbone(&mut vs, Arch::ResNet34, &weights).unwrap();
    // conv1 + bn1 (4 tensors) and 16 blocks of 2 convs + 2 BNs, 3 of them with a downsample conv + BN.
    assert_eq!(report.loaded, 1 + 4 + 16 * (2 + 2 * 4) + 3 * (1 + 4));
    let input = Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu));
    reference(&python, Arch::ResNet34, &pth, &input, dir.path());

    let eval = tch::no_grad(|| net.features(&input, &[false, false, false]));
    let (rel, cos) = compare(
        &eval,
        &read_f32(&dir.path().join("features.f32"), &[2, 512, 3, 3]),
    );
    assert!(
        rel < 1e-4 && cos > 0.99999,
        "eval features differ: relative {rel:e}, cosine {cos}"
    );
    let train = tch::no_grad(|| net.features(&input, &[true, true, false]));
    let (rel, cos) = compare(
        &train,
        &read_f32(&dir.path().join("features_train.f32"), &[2, 512, 3, 3]),
    );
    assert!(
        rel < 1e-4 && cos > 0.99999,
        "train-mode features differ: relative {rel:e}, cosine {cos}"
    );
}

/// `size` x `size` RGB in 0..1, squashed (the lesson's resize), NCHW.
fn load_image(path: &Path, size: u32) -> Tensor {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let image = image::imageops::resize(&image, size, size, image::imageops::FilterType::Triangle);
    let values: Vec<f32> = image
        .into_raw()
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    let side = i64::from(size);
    Tensor::from_slice(&values)
        .reshape([side, side, 3])
        .permute([2, 0, 1])
}

fn normalise(x: &Tensor, arch: Arch) -> Tensor {
    let (mean, std) = arch.input_normalization();
    let mean = Tensor::from_slice(&mean).reshape([1, 3, 1, 1]);
    let std = Tensor::from_slice(&std).reshape([1, 3, 1, 1]);
    (x - mean) / std
}

/// (VOC image, its single large object, ImageNet classes that name it)
const IMAGES: [(&str, &str, std::ops::RangeInclusive<i64>); 3] = [
    ("006556.jpg", "dog", 151..=268), // the dog breeds
    ("006971.jpg", "cat", 281..=285), // tabby .. Egyptian cat
    ("008388.jpg", "car", 407..=817), // checked against CAR_CLASSES below
];
/// ImageNet classes for cars: ambulance, beach wagon, cab, car wheel, convertible,
/// grille, jeep, limousine, minivan, Model T, moving van, pickup, police van,
/// racer, sports car, tow truck, minibus, recreational vehicle.
const CAR_CLASSES: [i64; 18] = [
    407, 436, 468, 479, 511, 581, 609, 627, 656, 661, 675, 717, 734, 751, 817, 864, 654, 757,
];

/// The imported ImageNet weights of an arch (`cargo xtask weights fetch <arch>`).
fn imported_weights(arch: Arch) -> Option<PathBuf> {
    let path = cache_dir().join(format!("weights/{}.safetensors", arch.name()));
    path.exists().then_some(path)
}

/// An EfficientNet-Lite body with its pretrained weights against the
/// reference on three VOC images squashed to `size`: the feature maps, the
/// ImageNet logits of the file's classifier on our features, and that those
/// logits name what each image shows.
fn lite_matches_the_reference_and_knows_voc_images(arch: Arch, size: u32) {
    let (Some(python), Some(weights)) = (peer_python(), imported_weights(arch)) else {
        eprintln!(
            "skipping: needs the peer Python (cargo xtask peer-setup) and the {arch} weights \
             (cargo xtask weights fetch {arch})"
        );
        return;
    };
    let Some(images) = voc_images() else {
        eprintln!("skipping: no VOC 2007 copy (../shared/voc2007 or $LESSON8_VOC2007)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = normalise(
        &Tensor::stack(
            &IMAGES.map(|(file, _, _)| load_image(&images.join(file), size)),
            0,
        ),
        arch,
    );

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(
        &vs.root(),
        arch,
        HeadSpec::Classifier { classes: 20 },
        i64::from(size),
    );
    let report = load_backbone(&mut vs, arch, &weights).unwrap();
    assert!(
        report.ignored.iter().any(|k| k == "_fc.weight"),
        "{:?}",
        report.ignored
    );
    reference(&python, arch, &weights, &input, dir.path());

    let features = tch::no_grad(|| net.features(&input, &[false, false, false]));
    let side = arch.feature_size(i64::from(size));
    let theirs = read_f32(&dir.path().join("features.f32"), &[3, 1280, side, side]);
    let (rel, cos) = compare(&features, &theirs);
    let abs = (&features - &theirs).abs().max().double_value(&[]);
    eprintln!(
        "{arch} at {size}: features vs reference: max abs diff {abs:e}, relative {rel:e}, \
         min cosine {cos:.6}"
    );
    assert!(
        rel < 1e-3 && cos > 0.9999,
        "features differ: relative {rel:e}, cosine {cos}"
    );

    // The ImageNet classifier the file also holds, on our features.
    let named: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .collect();
    let logits = features
        .mean_dim([2, 3].as_slice(), false, Kind::Float)
        .linear(&named["_fc.weight"], Some(&named["_fc.bias"]));
    let theirs = read_f32(&dir.path().join("logits.f32"), &[3, 1000]);
    let (rel, _) = compare(&logits, &theirs);
    let abs = (&logits - &theirs).abs().max().double_value(&[]);
    eprintln!("{arch} at {size}: logits vs reference: max abs diff {abs:e}, relative {rel:e}");
    assert!(rel < 1e-3, "logits differ: relative {rel:e}");
    let top5 = logits.topk(5, 1, true, true).1;
    for (i, (file, what, classes)) in IMAGES.iter().enumerate() {
        let top: Vec<i64> = Vec::try_from(top5.get(i as i64)).unwrap();
        let plausible = |c: &i64| {
            if *what == "car" {
                CAR_CLASSES.contains(c)
            } else {
                classes.contains(c)
            }
        };
        eprintln!("{arch} at {size}: {file} ({what}): ImageNet top-5 {top:?}");
        assert!(
            top.iter().any(plausible),
            "{file} shows a {what}, yet {arch}'s top-5 ImageNet classes at {size} are {top:?}"
        );
    }
}

#[test]
fn efficientnet_lite0_matches_the_reference_and_knows_voc_images() {
    lite_matches_the_reference_and_knows_voc_images(Arch::EfficientNetLite0, 224);
}

/// At Lite1's native 240 (8 x 8 features) and at the lesson's 224.
#[test]
fn efficientnet_lite1_matches_the_reference_and_knows_voc_images() {
    lite_matches_the_reference_and_knows_voc_images(Arch::EfficientNetLite1, 240);
    lite_matches_the_reference_and_knows_voc_images(Arch::EfficientNetLite1, 224);
}

/// At Lite2's native 260 (9 x 9 features, odd sizes on the way: 65, 33, 17)
/// and at the lesson's 224.
#[test]
fn efficientnet_lite2_matches_the_reference_and_knows_voc_images() {
    lite_matches_the_reference_and_knows_voc_images(Arch::EfficientNetLite2, 260);
    lite_matches_the_reference_and_knows_voc_images(Arch::EfficientNetLite2, 224);
}
