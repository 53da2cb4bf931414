//! Class-activation maps from a layer's activations and their gradients, on the host (the maps
//! are small: channels x a 7x7-to-24x24 grid per image), and the resize to the input size.
//!
//! Each method weighs the activations `A` (`[channels, positions]`) by the gradients `G` of the
//! explained class's logit with respect to them:
//! - Grad-CAM (Selvaraju et al., ICCV 2017): per channel the mean gradient over positions,
//!   `cam = relu(sum_c mean(G_c) A_c)`.
//! - Grad-CAM++ (Chattopadhay et al., WACV 2018, eq. 19 with the exponential head's closed form):
//!   `alpha = G^2 / (2 G^2 + sum(A_c) G^3)` (0 where `G` is 0), weight `sum(alpha relu(G))`.
//! - LayerCAM (Jiang et al., TIP 2021): per position, `cam = relu(sum_c relu(G_c) A_c)`.
//!
//! Scaling follows pytorch-grad-cam 1.5.7 (the reference the parity tests use): the map is
//! min-max scaled (`(m - min) / (max + 1e-7)` after subtracting the min), resized bilinearly to
//! the input with OpenCV's half-pixel rule, clamped at 0 and min-max scaled again.

/// Which weighting of the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CamMethod {
    GradCam,
    GradCamPlusPlus,
    LayerCam,
}

impl CamMethod {
    pub fn name(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::GradCamPlusPlus => "gradcam++",
            CamMethod::LayerCam => "layercam",
        }
    }
}

/// One image's map on the activation grid, after the ReLU and before any scaling.
///
/// `act` and `grad` are `[channels, positions]`, row-major.
pub fn cam(method: CamMethod, act: &[f32], grad: &[f32], channels: usize) -> Vec<f32> {
    assert_eq!(act.len(), grad.len());
    let positions = act.len() / channels;
    let mut out = vec![0f32; positions];
    match method {
        CamMethod::GradCam | CamMethod::GradCamPlusPlus => {
            for c in 0..channels {
                let a = &act[c * positions..(c + 1) * positions];
                let g = &grad[c * positions..(c + 1) * positions];
                let w = if method == CamMethod::GradCam {
                    g.iter().sum::<f32>() / positions as f32
                } else {
                    let sum_a: f32 = a.iter().sum();
                    g.iter()
                        .map(|&g| {
                            if g == 0.0 {
                                return 0.0;
                            }
                            let g2 = g * g;
                            // 1e-6 keeps the ratio finite where the denominator vanishes.
                            let alpha = g2 / (2.0 * g2 + sum_a * g2 * g + 1e-6);
                            alpha * g.max(0.0)
                        })
                        .sum()
                };
                for (o, &a) in out.iter_mut().zip(a) {
                    *o += w * a;
                }
            }
        }
        CamMethod::LayerCam => {
            for c in 0..channels {
                let a = &act[c * positions..(c + 1) * positions];
                let g = &grad[c * positions..(c + 1) * positions];
                for ((o, &a), &g) in out.iter_mut().zip(a).zip(g) {
                    *o += g.max(0.0) * a;
                }
            }
        }
    }
    for o in &mut out {
        *o = o.max(0.0);
    }
    out
}

/// [`cam`] of each of `n` images, `act` and `grad` `[n, channels, positions]`.
pub fn cams(method: CamMethod, act: &[f32], grad: &[f32], n: usize, channels: usize) -> Vec<f32> {
    let per = act.len() / n;
    (0..n)
        .flat_map(|i| {
            let at = i * per..(i + 1) * per;
            cam(method, &act[at.clone()], &grad[at], channels)
        })
        .collect()
}

/// `(m - min(m)) / (max(m - min(m)) + 1e-7)`: into [0, 1), and all zeros for a constant map.
pub fn min_max(map: &mut [f32]) {
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    for v in map.iter_mut() {
        *v -= min;
    }
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in map.iter_mut() {
        *v /= 1e-7 + max;
    }
}

/// Bilinear resize of a `[sh, sw]` map to `[dh, dw]` with OpenCV's `INTER_LINEAR` rule: pixel
/// centres at half-integers (`src = (dst + 0.5) * s / d - 0.5`), clamped to the edge pixels.
pub fn resize_bilinear(src: &[f32], [sh, sw]: [usize; 2], [dh, dw]: [usize; 2]) -> Vec<f32> {
    assert_eq!(src.len(), sh * sw);
    let taps = |d: usize, s: usize| -> Vec<(usize, usize, f32)> {
        (0..d)
            .map(|i| {
                let f = (i as f64 + 0.5) * s as f64 / d as f64 - 0.5;
                let mut i0 = f.floor() as isize;
                let mut t = (f - i0 as f64) as f32;
                if i0 < 0 {
                    i0 = 0;
                    t = 0.0;
                }
                if i0 as usize >= s - 1 {
                    i0 = s as isize - 1;
                    t = 0.0;
                }
                let i0 = i0 as usize;
                (i0, (i0 + 1).min(s - 1), t)
            })
            .collect()
    };
    let ys = taps(dh, sh);
    let xs = taps(dw, sw);
    let mut out = Vec::with_capacity(dh * dw);
    for &(y0, y1, ty) in &ys {
        for &(x0, x1, tx) in &xs {
            let top = src[y0 * sw + x0] * (1.0 - tx) + src[y0 * sw + x1] * tx;
            let bottom = src[y1 * sw + x0] * (1.0 - tx) + src[y1 * sw + x1] * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// A grid map to the input size as pytorch-grad-cam presents it: scaled, resized, clamped at
/// 0, scaled again.
pub fn to_input_size(grid_map: &[f32], grid: [usize; 2], side: usize) -> Vec<f32> {
    let mut m = grid_map.to_vec();
    min_max(&mut m);
    let mut out = resize_bilinear(&m, grid, [side, side]);
    for v in &mut out {
        *v = v.max(0.0);
    }
    min_max(&mut out);
    out
}
