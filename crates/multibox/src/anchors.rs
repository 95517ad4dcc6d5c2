//! The lesson's anchor boxes ("default boxes", "priors").
//!
//! ```python
//! anc_grids = [4, 2, 1]
//! anc_zooms = [0.7, 1., 1.3]
//! anc_ratios = [(1., 1.), (1., 0.5), (0.5, 1.)]
//! anchor_scales = [(anz*i, anz*j) for anz in anc_zooms for (i, j) in anc_ratios]
//! ```
//!
//! 4x4 + 2x2 + 1x1 = 21 cells, 3 zooms x 3 ratios = 9 anchors per cell:
//! 189 anchors, in `0..1` units of the (square, squashed) input image.
//!
//! # Order (the model's output convolutions must produce the same)
//!
//! Anchor `n` is found by, outermost first:
//!
//! 1. the grid, in the order of [`AnchorParams::grids`] (4x4 first);
//! 2. the cell, row-major: row `r` (top to bottom), then column `c`;
//! 3. the zoom, in the order of [`AnchorParams::zooms`];
//! 4. the ratio, in the order of [`AnchorParams::ratios`].
//!
//! So for the default params, anchors `0..9` are the top-left cell of the
//! 4x4 grid (zoom 0.7 with ratios (1,1), (1,0.5), (0.5,1), then zoom 1.0,
//! then 1.3), `9..18` the cell right of it, `144..180` the 2x2 grid and
//! `180..189` the single cell. This is the lesson's order: its `anc_x`
//! (`np.repeat(linspace)`, the first, vertical, coordinate) varies slower
//! than `anc_y` (`np.tile(linspace)`), and its `flatten_conv` turns an output
//! convolution of `k * n` channels on an `h x w` map into
//! `permute(0, 2, 3, 1).view(bs, -1, n)`: rows, then columns, then the `k`
//! anchors of the cell (channels `a*n .. (a+1)*n` belong to anchor `a`).
//! The grids are concatenated in the order of the heads (4x4, 2x2, 1x1).
//!
//! # Sizes and units
//!
//! Cell centres are `np.linspace(1/(2g), 1 - 1/(2g), g)`; an anchor of zoom
//! `z` and ratio `(i, j)` on a `g x g` grid is `z*i/g` high and `z*j/g` wide
//! (a ratio is `(height factor, width factor)`, as the lesson's
//! `hw2corners(ctr, hw)` takes `[height, width]`). Each anchor also carries
//! its grid's cell size `1/g` (the lesson's `grid_sizes`), by which the
//! offset activation moves its centre (`matching.rs`).
//!
//! The lesson computes the anchors in `float64` (numpy) and casts them to
//! `float32`, then computes the corners in `float32`; so do we, which is why
//! the params are `f64`: `0.7_f32 * 1.0 / 4.0` is not the lesson's anchor.

use serde::{Deserialize, Serialize};

use crate::boxes::{centre_size_to_corners, CentreSize, Corners};

/// Which anchors: the lesson's defaults unless a pipeline file says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorParams {
    /// Grid sides, one output convolution each: `[4, 2, 1]`.
    #[serde(default = "default_grids")]
    pub grids: Vec<u32>,
    /// Anchor size relative to its cell: `[0.7, 1.0, 1.3]`.
    #[serde(default = "default_zooms")]
    pub zooms: Vec<f64>,
    /// `[height factor, width factor]`: `[[1, 1], [1, 0.5], [0.5, 1]]`.
    #[serde(default = "default_ratios")]
    pub ratios: Vec<[f64; 2]>,
}

fn default_grids() -> Vec<u32> {
    vec![4, 2, 1]
}
fn default_zooms() -> Vec<f64> {
    vec![0.7, 1.0, 1.3]
}
fn default_ratios() -> Vec<[f64; 2]> {
    vec![[1.0, 1.0], [1.0, 0.5], [0.5, 1.0]]
}

impl Default for AnchorParams {
    fn default() -> Self {
        AnchorParams {
            grids: default_grids(),
            zooms: default_zooms(),
            ratios: default_ratios(),
        }
    }
}

/// Why anchor params cannot make anchors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnchorError {
    #[error("anchor params: `{what}` is empty; at least one is needed")]
    Empty { what: &'static str },
    #[error("anchor params: grid side 0 in `grids`; a grid has at least one cell")]
    ZeroGrid,
    #[error("anchor params: {what} {value} is not a positive finite number")]
    NotPositive { what: &'static str, value: f64 },
}

impl AnchorParams {
    /// Anchors per grid cell (`k` in the lesson): zooms x ratios.
    pub fn anchors_per_cell(&self) -> usize {
        self.zooms.len() * self.ratios.len()
    }

    /// Anchors in all: cells over all grids x [`Self::anchors_per_cell`].
    pub fn anchor_count(&self) -> usize {
        let cells: usize = self.grids.iter().map(|&g| (g as usize).pow(2)).sum();
        cells * self.anchors_per_cell()
    }

    /// Refuses params that make no anchors or anchors without size.
    pub fn check(&self) -> Result<(), AnchorError> {
        for (what, empty) in [
            ("grids", self.grids.is_empty()),
            ("zooms", self.zooms.is_empty()),
            ("ratios", self.ratios.is_empty()),
        ] {
            if empty {
                return Err(AnchorError::Empty { what });
            }
        }
        if self.grids.contains(&0) {
            return Err(AnchorError::ZeroGrid);
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if let Some(&value) = self.zooms.iter().find(|&&z| !positive(z)) {
            return Err(AnchorError::NotPositive {
                what: "zoom",
                value,
            });
        }
        if let Some(&value) = self.ratios.iter().flatten().find(|&&r| !positive(r)) {
            return Err(AnchorError::NotPositive {
                what: "ratio factor",
                value,
            });
        }
        Ok(())
    }
}

/// One anchor, in `0..1` units of the input image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// Centre `[row, column]` and size `[height, width]`.
    pub centre_size: CentreSize,
    /// `[top, left, bottom, right]`, computed from `centre_size` in `f32`.
    pub corners: Corners,
    /// Side of its grid's cell, `1/g` (the lesson's `grid_sizes`).
    pub grid_size: f32,
}

/// All anchors in the order documented at the top of this module.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchors {
    pub params: AnchorParams,
    pub anchors: Vec<Anchor>,
}

impl Anchors {
    /// The anchors of `params`, checked.
    pub fn new(params: &AnchorParams) -> Result<Self, AnchorError> {
        params.check()?;
        let mut anchors = Vec::with_capacity(params.anchor_count());
        for &grid in &params.grids {
            let g = f64::from(grid);
            let centres = linspace(1.0 / (2.0 * g), 1.0 - 1.0 / (2.0 * g), grid as usize);
            for &row in &centres {
                for &column in &centres {
                    for &zoom in &params.zooms {
                        for &[i, j] in &params.ratios {
                            let centre_size = CentreSize {
                                centre: [row as f32, column as f32],
                                size: [(zoom * i / g) as f32, (zoom * j / g) as f32],
                            };
                            anchors.push(Anchor {
                                centre_size,
                                corners: centre_size_to_corners(centre_size),
                                grid_size: (1.0 / g) as f32,
                            });
                        }
                    }
                }
            }
        }
        Ok(Anchors {
            params: params.clone(),
            anchors,
        })
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// Every anchor's corners, in order (what matching and drawing take).
    pub fn corners(&self) -> Vec<Corners> {
        self.anchors.iter().map(|a| a.corners).collect()
    }

    /// The index of the anchor of grid number `grid` (into `params.grids`),
    /// cell `(row, column)` and in-cell number `k` (`zoom * ratios + ratio`);
    /// `None` when any is out of range.
    pub fn index(&self, grid: usize, row: usize, column: usize, k: usize) -> Option<usize> {
        let side = *self.params.grids.get(grid)? as usize;
        let per_cell = self.params.anchors_per_cell();
        if row >= side || column >= side || k >= per_cell {
            return None;
        }
        let before: usize = self.params.grids[..grid]
            .iter()
            .map(|&g| (g as usize).pow(2))
            .sum();
        Some(((before + row * side + column) * per_cell) + k)
    }

    /// For each anchor, the index of its left-right mirror image: the anchor
    /// of the same grid, row and in-cell number in column `side - 1 - c`
    /// (a mirror keeps every anchor's height and width, and the cell centres
    /// are symmetric about the middle). What flip TTA reorders the mirrored
    /// image's output by; the map is its own inverse.
    pub fn mirrored_order(&self) -> Vec<usize> {
        let per_cell = self.params.anchors_per_cell();
        let mut order = Vec::with_capacity(self.len());
        for (grid, &side) in self.params.grids.iter().enumerate() {
            let side = side as usize;
            for row in 0..side {
                for column in 0..side {
                    for k in 0..per_cell {
                        order.push(
                            self.index(grid, row, side - 1 - column, k)
                                .expect("every (grid, row, column, k) in range has an index"),
                        );
                    }
                }
            }
        }
        order
    }
}

/// numpy's `linspace(start, stop, n)`: `start + i * step`, the last one
/// exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                stop
            } else {
                start + i as f64 * step
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lessons_189_anchors() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        assert_eq!(anchors.len(), 189);
        assert_eq!(AnchorParams::default().anchor_count(), 189);
        assert_eq!(AnchorParams::default().anchors_per_cell(), 9);
        // The lesson's `anchors` printout starts (ctr_y, ctr_x, h, w):
        // 0.1250 0.1250 0.1750 0.1750 / 0.1250 0.1250 0.1750 0.0875 /
        // 0.1250 0.1250 0.0875 0.1750 / 0.1250 0.1250 0.2500 0.2500 ...
        let row = |n: usize| {
            let a = anchors.anchors[n].centre_size;
            [a.centre[0], a.centre[1], a.size[0], a.size[1]]
        };
        assert_eq!(
            row(0),
            [0.125, 0.125, (0.7f64 / 4.0) as f32, (0.7f64 / 4.0) as f32]
        );
        assert_eq!(row(1), [0.125, 0.125, 0.175, 0.0875]);
        assert_eq!(row(2), [0.125, 0.125, 0.0875, 0.175]);
        assert_eq!(row(3), [0.125, 0.125, 0.25, 0.25]);
        assert_eq!(row(8), [0.125, 0.125, (1.3f64 * 0.5 / 4.0) as f32, 0.325]);
        // Cell (0, 1) of the 4x4 grid: the column moves first.
        assert_eq!(row(9)[..2], [0.125, 0.375]);
        // Cell (1, 0).
        assert_eq!(row(4 * 9)[..2], [0.375, 0.125]);
        // Last cell of the 4x4 grid, then the 2x2 grid, then the 1x1.
        assert_eq!(row(15 * 9)[..2], [0.875, 0.875]);
        assert_eq!(row(16 * 9), [0.25, 0.25, 0.35, 0.35]);
        assert_eq!(row(16 * 9 + 9)[..2], [0.25, 0.75]);
        assert_eq!(row(180), [0.5, 0.5, 0.7, 0.7]);
        assert_eq!(row(188), [0.5, 0.5, 0.65, 1.3]);
        let grid_sizes: Vec<f32> = anchors.anchors.iter().map(|a| a.grid_size).collect();
        assert!(grid_sizes[..144].iter().all(|&g| g == 0.25));
        assert!(grid_sizes[144..180].iter().all(|&g| g == 0.5));
        assert!(grid_sizes[180..].iter().all(|&g| g == 1.0));
    }

    #[test]
    fn corners_are_the_lessons_hw2corners_in_f32() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        // The lesson's `anchor_cnr` starts 0.0375 0.0375 0.2125 0.2125.
        let first = anchors.anchors[0].corners;
        let (c, h) = (0.125f32, (0.7f64 / 4.0) as f32);
        assert_eq!(first, [c - h / 2.0, c - h / 2.0, c + h / 2.0, c + h / 2.0]);
        assert!((first[0] - 0.0375).abs() < 1e-7 && (first[2] - 0.2125).abs() < 1e-7);
        // The 1x1 grid's last anchor sticks out left and right; f32 as torch computes it.
        let last = anchors.corners()[188];
        let (h, w) = ((1.3f64 * 0.5) as f32, 1.3f32);
        assert_eq!(
            last,
            [0.5 - h / 2.0, 0.5 - w / 2.0, 0.5 + h / 2.0, 0.5 + w / 2.0]
        );
        let lesson = [0.175, -0.15, 0.825, 1.15];
        assert!(
            last.iter().zip(lesson).all(|(a, b)| (a - b).abs() < 1e-7),
            "{last:?}"
        );
        for a in &anchors.anchors {
            assert_eq!(a.corners, centre_size_to_corners(a.centre_size));
        }
    }

    #[test]
    fn the_mirror_of_an_anchor_is_the_same_anchor_across_the_middle() {
        for params in [
            AnchorParams::default(),
            AnchorParams {
                grids: vec![7, 4, 2, 1],
                ..AnchorParams::default()
            },
        ] {
            let anchors = Anchors::new(&params).unwrap();
            let order = anchors.mirrored_order();
            assert_eq!(order.len(), anchors.len());
            for (n, &m) in order.iter().enumerate() {
                assert_eq!(order[m], n, "the map is its own inverse");
                let (a, b) = (anchors.anchors[n], anchors.anchors[m]);
                assert_eq!(a.centre_size.size, b.centre_size.size);
                assert_eq!(a.grid_size, b.grid_size);
                assert_eq!(a.centre_size.centre[0], b.centre_size.centre[0]);
                let mirrored_column = 1.0 - b.centre_size.centre[1];
                assert!((a.centre_size.centre[1] - mirrored_column).abs() < 1e-6);
            }
        }
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        // The 4x4 grid's top-left cell and its top-right cell; the 1x1 grid's
        // anchors are their own mirrors.
        assert_eq!(
            anchors.mirrored_order()[4],
            anchors.index(0, 0, 3, 4).unwrap()
        );
        assert_eq!(
            anchors.mirrored_order()[180..],
            (180..189).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn index_follows_the_documented_order() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        let mut n = 0;
        for (grid, &side) in [4usize, 2, 1].iter().enumerate() {
            for row in 0..side {
                for column in 0..side {
                    for k in 0..9 {
                        assert_eq!(anchors.index(grid, row, column, k), Some(n));
                        let a = anchors.anchors[n].centre_size;
                        let centre = |i: usize| (2 * i + 1) as f32 / (2 * side) as f32;
                        assert_eq!(a.centre, [centre(row), centre(column)], "anchor {n}");
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 189);
        assert_eq!(anchors.index(3, 0, 0, 0), None);
        assert_eq!(anchors.index(0, 4, 0, 0), None);
        assert_eq!(anchors.index(1, 0, 0, 9), None);
    }

    #[test]
    fn params_deserialise_with_defaults_and_refuse_typos() {
        let params: AnchorParams = toml::from_str("").unwrap();
        assert_eq!(params, AnchorParams::default());
        let params: AnchorParams =
            toml::from_str("grids = [2]\nzooms = [1.0]\nratios = [[1.0, 2.0]]").unwrap();
        let anchors = Anchors::new(&params).unwrap();
        assert_eq!(anchors.len(), 4);
        assert_eq!(anchors.anchors[3].centre_size.size, [0.5, 1.0]);
        assert!(toml::from_str::<AnchorParams>("grid = [4]").is_err());
    }

    #[test]
    fn bad_params_are_refused_saying_why() {
        let with = |f: fn(&mut AnchorParams)| {
            let mut p = AnchorParams::default();
            f(&mut p);
            Anchors::new(&p).unwrap_err().to_string()
        };
        assert!(with(|p| p.grids.clear()).contains("`grids` is empty"));
        assert!(with(|p| p.ratios.clear()).contains("`ratios` is empty"));
        assert!(with(|p| p.grids.push(0)).contains("grid side 0"));
        assert!(with(|p| p.zooms[1] = -1.0).contains("zoom -1"));
        assert!(with(|p| p.ratios[0][1] = f64::NAN).contains("ratio factor NaN"));
    }

    #[test]
    fn linspace_is_numpys() {
        assert_eq!(linspace(0.125, 0.875, 4), [0.125, 0.375, 0.625, 0.875]);
        assert_eq!(linspace(0.5, 0.5, 1), [0.5]);
        assert_eq!(linspace(0.1, 0.9, 3), [0.1, 0.1 + 0.4, 0.9]);
    }
}
