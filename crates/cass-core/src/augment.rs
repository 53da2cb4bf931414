//! The CASS augmentation, applied to whole batches on the backend's device and seeded.
//!
//! Per image, as in the authors' pipeline: with p = 0.3 colour jitter + random perspective
//! (distortion 0.2, its own p = 0.5); with p = 0.3 colour jitter + random rotation (+-10 deg);
//! vertical flip p = 0.3; horizontal flip p = 0.3; then ImageNet normalisation.
//!
//! Implementation: the colour jitters are per-image scalar factors applied with broadcasting
//! (brightness, contrast, saturation, in that fixed order). All geometric operations,
//! and the resize to the model's input size, are composed into ONE homography per image, so
//! the whole batch is warped by a single bilinear `grid_sample` with black fill. Composition
//! applies the colour jitters before the warp; torchvision jitters the second time after the
//! perspective warp, which differs only on the black fill of warped borders.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Channel order the network expects (Caffe-trained weights want BGR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// Augmentation probabilities and strengths (defaults are the paper's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Turn all random augmentation off (resize + normalise only).
    pub enabled: bool,
    pub p_jitter_perspective: f64,
    pub p_perspective: f64,
    pub perspective_distortion: f64,
    pub p_jitter_rotate: f64,
    pub rotate_degrees: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub p_vflip: f64,
    pub p_hflip: f64,
    /// Probability of turning an image grey (ITU-R 601 luma in every channel), after the colour
    /// jitter, as torchvision's `RandomGrayscale` (DINO uses 0.2). 0 draws nothing, so runs
    /// without it see the random numbers they always did.
    #[serde(default)]
    pub p_grayscale: f64,
    /// Random resized crop (torchvision's `RandomResizedCrop`, aspect ratio 3/4 to 4/3): the
    /// crop's area as a fraction of the image, drawn uniformly from `[min, max]`, applied before
    /// every other transform. `[1, 1]` (the paper) turns it off.
    pub crop_scale: [f64; 2],
    /// Normalisation, per channel in the network's channel order, for inputs in [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channel_order: ChannelOrder,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            p_jitter_perspective: 0.3,
            p_perspective: 0.5,
            perspective_distortion: 0.2,
            p_jitter_rotate: 0.3,
            rotate_degrees: 10.0,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            p_vflip: 0.3,
            p_hflip: 0.3,
            p_grayscale: 0.0,
            crop_scale: [1.0, 1.0],
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channel_order: ChannelOrder::Rgb,
        }
    }
}

/// A 3x3 matrix acting on homogeneous normalised coordinates (x, y in [-1, 1]).
type Mat3 = [[f64; 3]; 3];

const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn matmul3(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// Homography mapping each `from[i]` to `to[i]` (4 point pairs), by solving the 8x8 system.
fn homography(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Mat3 {
    let mut a = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (from[i], to[i]);
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // Gauss-Jordan with partial pivoting on the augmented matrix.
    for col in 0..8 {
        let pivot = (col..8)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        let p = a[col][col];
        if p.abs() < 1e-12 {
            return IDENTITY;
        }
        for k in col..9 {
            a[col][k] /= p;
        }
        for r in 0..8 {
            if r != col {
                let f = a[r][col];
                for k in col..9 {
                    a[r][k] -= f * a[col][k];
                }
            }
        }
    }
    let h: Vec<f64> = (0..8).map(|i| a[i][8]).collect();
    [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], 1.0]]
}

/// Per-image random parameters drawn for one batch.
#[derive(Debug, Clone)]
pub struct BatchParams {
    /// `[batch]` brightness, contrast and saturation factors (1 = unchanged), per jitter.
    pub jitter: Vec<[f32; 6]>,
    /// Sampling maps (output normalised coords -> input normalised coords).
    pub warps: Vec<Mat3>,
    /// `[batch]` whether each image is turned grey.
    pub grayscale: Vec<bool>,
}

impl AugmentConfig {
    /// Draws the parameters of one batch of `batch` images from `seed`.
    pub fn sample(&self, batch: usize, seed: u64, aspect: f64) -> BatchParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut jitter = Vec::with_capacity(batch);
        let mut warps = Vec::with_capacity(batch);
        let mut grayscale = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut j = [1.0f32; 6];
            let mut warp = IDENTITY;
            if self.enabled && self.crop_scale[0] < 1.0 {
                // Output coordinates map into a window of half-extents (w, h) around (cx, cy);
                // composed first, it is the transform nearest the input image.
                let area = rng.random_range(self.crop_scale[0]..=self.crop_scale[1].max(self.crop_scale[0]));
                let ratio = rng.random_range((3.0f64 / 4.0).ln()..=(4.0f64 / 3.0).ln()).exp();
                let w = (area * ratio).sqrt().min(1.0);
                let h = (area / ratio).sqrt().min(1.0);
                let cx = rng.random_range(-(1.0 - w)..=(1.0 - w));
                let cy = rng.random_range(-(1.0 - h)..=(1.0 - h));
                warp = [[w, 0.0, cx], [0.0, h, cy], [0.0, 0.0, 1.0]];
            }
            if self.enabled {
                let factor = |rng: &mut ChaCha8Rng, s: f64| rng.random_range((1.0 - s).max(0.0)..=1.0 + s) as f32;
                if rng.random_bool(self.p_jitter_perspective) {
                    j[0] = factor(&mut rng, self.brightness);
                    j[1] = factor(&mut rng, self.contrast);
                    j[2] = factor(&mut rng, self.saturation);
                    if rng.random_bool(self.p_perspective) {
                        // Corners move inwards by up to distortion * half the side (torchvision).
                        let d = self.perspective_distortion;
                        let corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
                        let mut moved = corners;
                        for (k, c) in moved.iter_mut().enumerate() {
                            let (sx, sy) = (-corners[k][0], -corners[k][1]);
                            c[0] += sx * rng.random_range(0.0..=d);
                            c[1] += sy * rng.random_range(0.0..=d);
                        }
                        // The output shows the input's corners at the moved positions.
                        warp = matmul3(&warp, &homography(&moved, &corners));
                    }
                }
                if rng.random_bool(self.p_jitter_rotate) {
                    j[3] = factor(&mut rng, self.brightness);
                    j[4] = factor(&mut rng, self.contrast);
                    j[5] = factor(&mut rng, self.saturation);
                    let theta = rng
                        .random_range(-self.rotate_degrees..=self.rotate_degrees)
                        .to_radians();
                    // Rotate in pixel space: scale x by the aspect ratio (width / height).
                    let (c, s) = (theta.cos(), theta.sin());
                    let rot = [[c, -s / aspect, 0.0], [s * aspect, c, 0.0], [0.0, 0.0, 1.0]];
                    warp = matmul3(&warp, &rot);
                }
                if rng.random_bool(self.p_vflip) {
                    warp = matmul3(&warp, &[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
                }
                if rng.random_bool(self.p_hflip) {
                    warp = matmul3(&warp, &[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
                }
            }
            grayscale.push(self.enabled && self.p_grayscale > 0.0 && rng.random_bool(self.p_grayscale));
            jitter.push(j);
            warps.push(warp);
        }
        BatchParams {
            jitter,
            warps,
            grayscale,
        }
    }
}

fn column(values: Vec<f32>, device: &Device) -> Tensor<4> {
    let b = values.len();
    Tensor::from_data(TensorData::new(values, [b, 1, 1, 1]), device)
}

/// ITU-R 601 luma, as torchvision's `rgb_to_grayscale`.
///
/// # Shapes
/// `[b, 3, h, w] -> [b, 1, h, w]`
fn gray(x: &Tensor<4>) -> Tensor<4> {
    let r = x.clone().narrow(1, 0, 1);
    let g = x.clone().narrow(1, 1, 1);
    let bl = x.clone().narrow(1, 2, 1);
    r.mul_scalar(0.299) + g.mul_scalar(0.587) + bl.mul_scalar(0.114)
}

/// One colour jitter with per-image factors `[batch, 1, 1, 1]`.
fn jitter(x: Tensor<4>, brightness: Tensor<4>, contrast: Tensor<4>, saturation: Tensor<4>) -> Tensor<4> {
    let x = (x * brightness).clamp(0.0, 1.0);
    let mean = gray(&x).mean_dim(2).mean_dim(3); // [b, 1, 1, 1]
    let x = (x.clone() * contrast.clone() + mean * (contrast.neg().add_scalar(1.0))).clamp(0.0, 1.0);
    let g = gray(&x);
    (x * saturation.clone() + g * saturation.neg().add_scalar(1.0)).clamp(0.0, 1.0)
}

/// Augments (or, with `params == None`, only resizes) a batch and normalises it.
///
/// # Shapes
/// `x`: `[batch, 3, h, w]` in [0, 1] -> `[batch, 3, size, size]` normalised
pub fn apply(x: Tensor<4>, params: Option<&BatchParams>, size: usize, cfg: &AugmentConfig) -> Tensor<4> {
    let device = x.device();
    let [b, _, h, w] = x.dims();
    let mut x = x;
    let warps: Option<&[Mat3]> = params.map(|p| p.warps.as_slice());
    if let Some(p) = params
        && p.jitter.iter().any(|j| j.iter().any(|&f| f != 1.0))
    {
        let col = |k: usize| column(p.jitter.iter().map(|j| j[k]).collect(), &device);
        x = jitter(x, col(0), col(1), col(2));
        x = jitter(x, col(3), col(4), col(5));
    }
    if let Some(p) = params
        && p.grayscale.iter().any(|&g| g)
    {
        let m = column(
            p.grayscale.iter().map(|&g| if g { 1.0 } else { 0.0 }).collect(),
            &device,
        ); // [b, 1, 1, 1]
        x = x.clone() * m.clone().neg().add_scalar(1.0) + gray(&x) * m;
    }
    let needs_warp = warps.is_some_and(|ws| ws.iter().any(|m| *m != IDENTITY));
    if needs_warp || h != size || w != size {
        let ws: Vec<Mat3> = warps.map(|w| w.to_vec()).unwrap_or_else(|| vec![IDENTITY; b]);
        x = warp(x, &ws, size);
    }
    if cfg.channel_order == ChannelOrder::Bgr {
        x = x.flip([1]);
    }
    let mean = Tensor::<1>::from_floats(cfg.mean, &device).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(cfg.std, &device).reshape([1, 3, 1, 1]);
    (x - mean) / std
}

/// Bilinear warp of every image by its sampling map, to `size x size`, black outside.
fn warp(x: Tensor<4>, warps: &[Mat3], size: usize) -> Tensor<4> {
    let device = x.device();
    let b = warps.len();
    // Pixel centres of the output in normalised coordinates (align_corners = false).
    let mut base = Vec::with_capacity(size * size * 3);
    for i in 0..size {
        for j in 0..size {
            let xn = (2.0 * j as f32 + 1.0) / size as f32 - 1.0;
            let yn = (2.0 * i as f32 + 1.0) / size as f32 - 1.0;
            base.extend_from_slice(&[xn, yn, 1.0]);
        }
    }
    let base = Tensor::<3>::from_data(TensorData::new(base, [1, size * size, 3]), &device); // [1, s*s, 3]
    let mt: Vec<f32> = warps
        .iter()
        .flat_map(|m| (0..3).flat_map(move |k| (0..3).map(move |r| m[r][k] as f32)))
        .collect();
    let mt = Tensor::<3>::from_data(TensorData::new(mt, [b, 3, 3]), &device); // [b, 3, 3] (transposed)
    let p = base.expand([b, size * size, 3]).matmul(mt); // [b, s*s, 3]
    let z = p.clone().narrow(2, 2, 1);
    let xy = p.narrow(2, 0, 2) / z; // [b, s*s, 2]
    let grid = xy.reshape([b, size, size, 2]);
    let opts = GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(false);
    x.grid_sample_2d(grid, opts)
}

#[cfg(test)]
#[path = "augment_tests.rs"]
mod tests;
