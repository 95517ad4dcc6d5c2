//! Shapes, layer groups, freezing and weight loading, without any reference.

use model_zoo::{
    load_backbone, ssd_grid_sides, Arch, FeatureMap, HeadSpec, ModelZooError, Net, HEAD_GROUP,
};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

const ARCHES: [Arch; 2] = [Arch::ResNet34, Arch::EfficientNetLite0];

fn build(arch: Arch, head: HeadSpec, input_size: i64) -> (nn::VarStore, Net) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), arch, head, input_size);
    (vs, net)
}

#[test]
fn feature_maps_and_outputs_have_the_announced_shapes() {
    // (arch, input side, feature side)
    let cases = [
        (Arch::ResNet34, 224, 7),
        (Arch::ResNet34, 100, 4),
        (Arch::EfficientNetLite0, 224, 7),
        (Arch::EfficientNetLite0, 100, 4),
    ];
    for (arch, input, side) in cases {
        let (_vs, net) = build(arch, HeadSpec::FlattenLinear { outputs: 4 }, input);
        let channels = arch.feature_channels();
        assert_eq!(
            net.feature_shape(),
            (channels, side, side),
            "{arch} at {input}"
        );
        let x = Tensor::randn([2, 3, input, input], (Kind::Float, Device::Cpu));
        let features = tch::no_grad(|| net.features(&x, &[false; 3]));
        assert_eq!(
            features.size(),
            [2, channels, side, side],
            "{arch} at {input}"
        );
        assert_eq!(
            tch::no_grad(|| net.head_forward(&features, false)).size(),
            [2, 4]
        );
    }
}

/// The detector's head can read the stride-16 map folded beside the last one:
/// the last map's channels come first and unchanged, the folded map follows
/// on the same grid, and an odd stride-16 side (15 for Lite0 at 240 px) is
/// padded with zeros at the bottom and right before folding.
#[test]
fn the_detector_reads_the_stride16_map_folded_beside_the_last() {
    // (arch, input side, last side, stride-16 side)
    let cases = [
        (Arch::EfficientNetLite0, 256, 8, 16),
        (Arch::EfficientNetLite0, 240, 8, 15),
        (Arch::ResNet34, 224, 7, 14),
    ];
    for (arch, input, side, fine_side) in cases {
        let spec = |feature_map| HeadSpec::Ssd {
            feature_map,
            feature_grid: true,
            grids: 3,
            anchors_per_cell: 9,
            classes: 20,
            dropout: 0.4,
        };
        let (vs_last, last) = build(arch, spec(FeatureMap::Last), input);
        let (vs_both, both) = build(arch, spec(FeatureMap::WithStride16), input);
        let last_vars = vs_last.variables();
        tch::no_grad(|| {
            for (name, mut var) in vs_both.variables() {
                if !name.starts_with("head.") {
                    var.copy_(&last_vars[&name]);
                }
            }
        });
        let (c_last, c_fine) = (arch.feature_channels(), arch.stride16_channels());
        let channels = c_last + 4 * c_fine;
        assert_eq!(
            both.feature_shape(),
            (channels, side, side),
            "{arch} at {input}"
        );
        let x = Tensor::randn([2, 3, input, input], (Kind::Float, Device::Cpu));
        let (a, b) = tch::no_grad(|| {
            (
                last.features(&x, &[false; 3]),
                both.features(&x, &[false; 3]),
            )
        });
        assert_eq!(b.size(), [2, channels, side, side], "{arch} at {input}");
        assert!(
            b.narrow(1, 0, c_last).equal(&a),
            "{arch}: the last map first"
        );
        // pixel_unshuffle: channel c * 4 + 2i + j at (y, x) is the fine map's (2y + i, 2x + j).
        let fine = b
            .narrow(1, c_last, 4 * c_fine)
            .view([2, c_fine, 2, 2, side, side]);
        let padded = |dim_offset: i64, dim_cell: i64| {
            let cells = fine.select(dim_offset, 1).select(dim_cell - 1, side - 1);
            cells.abs().max().double_value(&[]) == 0.0
        };
        let odd = fine_side % 2 == 1;
        assert_eq!(padded(2, 4), odd, "{arch} at {input}: the last row");
        assert_eq!(padded(3, 5), odd, "{arch} at {input}: the last column");
        let rows: i64 = ssd_grid_sides(side, 3).iter().map(|g| g * g).sum::<i64>() + side * side;
        assert_eq!(
            tch::no_grad(|| both.head_forward(&b, false)).size(),
            [2, rows * 9, 4 + 20 + 1],
            "{arch} at {input}"
        );
    }
}

#[test]
fn heads_have_fastai_layouts() {
    let (vs, _net) = build(Arch::ResNet34, HeadSpec::FlattenLinear { outputs: 4 }, 224);
    let vars = vs.variables();
    assert_eq!(
        vars["head.1.weight"].size(),
        [4, 25088],
        "the lesson's bbox head"
    );
    assert_eq!(vars["head.1.bias"].size(), [4]);

    // The next lesson's combined head, 4 box numbers + 20 class scores.
    let spec = HeadSpec::FlattenMlp {
        hidden: 256,
        outputs: 24,
    };
    let (vs, net) = build(Arch::ResNet34, spec, 224);
    let vars = vs.variables();
    assert_eq!(vars["head.3.weight"].size(), [256, 25088]);
    assert_eq!(vars["head.5.running_mean"].size(), [256]);
    assert_eq!(vars["head.7.weight"].size(), [24, 256]);
    let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    assert_eq!(
        tch::no_grad(|| net.forward(&x, &[false; 3])).size(),
        [2, 24]
    );

    for arch in ARCHES {
        let (vs, net) = build(arch, HeadSpec::Classifier { classes: 20 }, 224);
        let vars = vs.variables();
        let pooled = 2 * arch.feature_channels();
        assert_eq!(
            vars["head.2.weight"].size(),
            [pooled],
            "{arch}: BatchNorm1d over max+avg pooling"
        );
        assert_eq!(vars["head.4.weight"].size(), [512, pooled]);
        assert_eq!(vars["head.6.running_var"].size(), [512]);
        assert_eq!(vars["head.8.weight"].size(), [20, 512]);
        let x = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(
            tch::no_grad(|| net.forward(&x, &[false; 3])).size(),
            [3, 20]
        );
    }
}

#[test]
fn variables_sit_in_the_optimiser_group_of_their_layer_group() {
    for arch in ARCHES {
        let (vs, net) = build(arch, HeadSpec::Classifier { classes: 2 }, 224);
        let names: HashMap<usize, String> = vs
            .variables()
            .into_iter()
            .map(|(name, t)| (t.data_ptr() as usize, name))
            .collect();
        let variables = vs.variables_.lock().unwrap();
        let mut per_group = [0usize; 3];
        for var in &variables.trainable_variables {
            let name = &names[&(var.tensor.data_ptr() as usize)];
            assert_eq!(var.group, net.group_of(name), "{arch}: {name}");
            per_group[var.group] += 1;
        }
        assert!(
            per_group.iter().all(|&n| n > 0),
            "{arch}: an empty group {per_group:?}"
        );
        assert_eq!(
            per_group[HEAD_GROUP], 8,
            "{arch}: 2 BatchNorm1d + 2 Linear, weight and bias each"
        );
    }
    let (_vs, net) = build(Arch::ResNet34, HeadSpec::FlattenLinear { outputs: 4 }, 224);
    let expected = [
        ("conv1.weight", 0),
        ("layer2.3.bn2.bias", 0),
        ("layer3.0.downsample.0.weight", 1),
        ("layer4.2.conv2.weight", 1),
        ("head.1.weight", 2),
    ];
    for (name, group) in expected {
        assert_eq!(net.group_of(name), group, "{name}");
    }
    let (_vs, net) = build(
        Arch::EfficientNetLite0,
        HeadSpec::FlattenLinear { outputs: 4 },
        224,
    );
    let expected = [
        ("_conv_stem.weight", 0),
        ("_bn0.bias", 0),
        // The stride-16 stage starts at block 5, as ResNet's layer3 does.
        ("_blocks.4._bn2.weight", 0),
        ("_blocks.5._expand_conv.weight", 1),
        ("_bn1.weight", 1),
        ("_conv_head.weight", 1),
    ];
    for (name, group) in expected {
        assert_eq!(net.group_of(name), group, "{name}");
    }
}

#[test]
fn frozen_groups_keep_their_batchnorm_statistics() {
    for (arch, early, late) in [
        (Arch::ResNet34, "bn1", "layer4.0.bn1"),
        (Arch::EfficientNetLite0, "_bn0", "_bn1"),
    ] {
        let (vs, net) = build(arch, HeadSpec::Classifier { classes: 2 }, 64);
        let stat = |name: &str| vs.variables()[&format!("{name}.running_mean")].copy();
        let (early_before, late_before, head_before) = (stat(early), stat(late), stat("head.2"));
        let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)) + 0.5;
        let _ = tch::no_grad(|| net.forward(&x, &[false, true, true]));
        assert!(
            stat(early).equal(&early_before),
            "{arch}: frozen group 0 moved"
        );
        assert!(
            !stat(late).equal(&late_before),
            "{arch}: group 1 in training mode should update"
        );
        assert!(
            !stat("head.2").equal(&head_before),
            "{arch}: the head in training mode should update"
        );
        let _ = tch::no_grad(|| net.forward(&x, &[true, false, false]));
        assert!(
            !stat(early).equal(&early_before),
            "{arch}: group 0 in training mode should update"
        );
    }
}

fn save_body(vs: &nn::VarStore, path: &std::path::Path, edit: impl Fn(&mut Vec<(String, Tensor)>)) {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("head."))
        .collect();
    edit(&mut named);
    Tensor::write_safetensors(&named, path).unwrap();
}

#[test]
fn load_backbone_copies_the_body_and_leaves_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.safetensors");
    for arch in ARCHES {
        let (source, source_net) = build(arch, HeadSpec::FlattenLinear { outputs: 4 }, 64);
        // The ImageNet classifier of the file is not part of the body.
        let classifier = if arch == Arch::ResNet34 {
            "fc.weight"
        } else {
            "_fc.weight"
        };
        save_body(&source, &file, |named| {
            named.push((
                classifier.into(),
                Tensor::zeros([1], (Kind::Float, Device::Cpu)),
            ))
        });
        let (mut target, target_net) = build(arch, HeadSpec::FlattenLinear { outputs: 4 }, 64);
        let head_before = target.variables()["head.1.weight"].copy();
        let report = load_backbone(&mut target, arch, &file).unwrap();
        assert_eq!(report.loaded, target.variables().len() - 2);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let same = tch::no_grad(|| {
            source_net
                .features(&x, &[false; 3])
                .equal(&target_net.features(&x, &[false; 3]))
        });
        assert!(same, "{arch}: loaded body computes other features");
        assert!(
            target.variables()["head.1.weight"].equal(&head_before),
            "{arch}: the head was touched"
        );
        assert_eq!(report.ignored, [classifier]);
    }
}

#[test]
fn load_backbone_names_every_difference_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.safetensors");
    let (source, _) = build(Arch::ResNet34, HeadSpec::FlattenLinear { outputs: 4 }, 64);
    save_body(&source, &file, |named| {
        named.retain(|(name, _)| name != "layer1.0.conv1.weight");
        named.push((
            "layer9.weight".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        ));
        let bn = named
            .iter_mut()
            .find(|(name, _)| name == "bn1.bias")
            .unwrap();
        bn.1 = Tensor::zeros([65], (Kind::Float, Device::Cpu));
    });
    let (mut target, _) = build(Arch::ResNet34, HeadSpec::FlattenLinear { outputs: 4 }, 64);
    let before = target.variables()["conv1.weight"].copy();
    let err = load_backbone(&mut target, Arch::ResNet34, &file).unwrap_err();
    assert!(matches!(err, ModelZooError::Mismatch { .. }));
    let message = err.to_string();
    for needle in [
        "bad.safetensors",
        "1 missing: layer1.0.conv1.weight",
        "1 unexpected: layer9.weight",
        "bn1.bias: file [65], model [64]",
    ] {
        assert!(message.contains(needle), "`{needle}` not in: {message}");
    }
    assert!(
        !message.contains("missing: bn1.bias"),
        "a shape mismatch is not also missing: {message}"
    );
    assert!(
        target.variables()["conv1.weight"].equal(&before),
        "a failed load changed the weights"
    );

    let err = load_backbone(
        &mut target,
        Arch::EfficientNetLite0,
        &dir.path().join("absent.safetensors"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
}

/// Stochastic depth is random while the body trains; `set_drop_connect(0.0)` (the
/// pipelines' `drop_connect = 0.0`) turns it off, and evaluation never drops.
#[test]
fn drop_connect_is_random_in_training_and_off_at_zero() {
    tch::manual_seed(0);
    let (_vs, mut net) = build(
        Arch::EfficientNetLite0,
        HeadSpec::FlattenLinear { outputs: 4 },
        64,
    );
    let x = Tensor::randn([8, 3, 64, 64], (Kind::Float, Device::Cpu));
    let train = [true, true, false];
    let twice = |net: &Net| tch::no_grad(|| (net.features(&x, &train), net.features(&x, &train)));

    let (a, b) = twice(&net);
    assert!(
        (a - b).abs().max().double_value(&[]) > 0.0,
        "the reference's drop-connect draws a new mask per call"
    );
    net.set_drop_connect(0.0);
    let (a, b) = twice(&net);
    assert_eq!(
        (a - b).abs().max().double_value(&[]),
        0.0,
        "no drop-connect at 0"
    );
    // Evaluation never drops, whatever the rate.
    net.set_drop_connect(0.5);
    let eval = [false; 3];
    let (a, b) = tch::no_grad(|| (net.features(&x, &eval), net.features(&x, &eval)));
    assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
}

/// fastai's `bn_freeze`: a training forward leaves the body's BatchNorm running
/// statistics as they were and normalises with them, so it equals evaluation when
/// nothing random runs.
#[test]
fn bn_freeze_keeps_running_statistics_in_training() {
    for arch in ARCHES {
        tch::manual_seed(0);
        let (vs, mut net) = build(arch, HeadSpec::FlattenLinear { outputs: 4 }, 64);
        net.set_drop_connect(0.0);
        let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let running = |vs: &nn::VarStore| -> Vec<Tensor> {
            let mut vars: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(name, _)| name.ends_with("running_mean"))
                .collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars.into_iter().map(|(_, t)| t.copy()).collect()
        };
        let before = running(&vs);
        let train = [true, true, false];
        let eval = [false; 3];

        net.set_bn_freeze(true);
        let (trained, evaluated) =
            tch::no_grad(|| (net.features(&x, &train), net.features(&x, &eval)));
        assert!(
            before.iter().zip(running(&vs)).all(|(a, b)| a.equal(&b)),
            "{arch}: running statistics moved under bn_freeze"
        );
        assert!(trained.allclose(&evaluated, 1e-5, 1e-5, false), "{arch}");

        net.set_bn_freeze(false);
        let _ = tch::no_grad(|| net.features(&x, &train));
        assert!(
            !before.iter().zip(running(&vs)).all(|(a, b)| a.equal(&b)),
            "{arch}: a training forward updates the running statistics"
        );
    }
}
