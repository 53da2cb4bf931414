use super::*;
use crate::testing::device;

#[test]
fn random_resized_crop_windows_lie_inside_the_image_with_the_drawn_area() {
    let cfg = AugmentConfig {
        crop_scale: [0.2, 0.5],
        p_jitter_perspective: 0.0,
        p_jitter_rotate: 0.0,
        p_vflip: 0.0,
        p_hflip: 0.0,
        ..Default::default()
    };
    let params = cfg.sample(64, 3, 1.0);
    for m in &params.warps {
        let (w, h, cx, cy) = (m[0][0], m[1][1], m[0][2], m[1][2]);
        // Area as a fraction of the image (the window spans 2w x 2h of a 2 x 2 square).
        assert!(
            (0.2 - 1e-9..=0.5 + 1e-9).contains(&(w * h)) || w == 1.0 || h == 1.0,
            "{m:?}"
        );
        assert!(cx.abs() + w <= 1.0 + 1e-9 && cy.abs() + h <= 1.0 + 1e-9, "{m:?}");
        assert!((3.0 / 4.0 - 1e-9..=4.0 / 3.0 + 1e-9).contains(&(w / h)) || w == 1.0 || h == 1.0);
    }
    // Off by default (the paper's pipeline): no crop is drawn.
    let plain = AugmentConfig {
        crop_scale: [1.0, 1.0],
        ..cfg
    };
    assert!(plain.sample(8, 3, 1.0).warps.iter().all(|m| *m == IDENTITY));
}

fn ramp(d: &Device, b: usize, s: usize) -> Tensor<4> {
    let v: Vec<f32> = (0..b * 3 * s * s).map(|i| (i % 97) as f32 / 96.0).collect();
    Tensor::from_data(TensorData::new(v, [b, 3, s, s]), d)
}

#[test]
fn disabled_augmentation_only_normalises() {
    let d = device();
    let cfg = AugmentConfig {
        enabled: false,
        ..Default::default()
    };
    let x = ramp(&d, 2, 8);
    let p = cfg.sample(2, 1, 1.0);
    let y = apply(x.clone(), Some(&p), 8, &cfg);
    let mean = Tensor::<1>::from_floats(IMAGENET_MEAN, &d).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(IMAGENET_STD, &d).reshape([1, 3, 1, 1]);
    let want = (x - mean) / std;
    let diff = (y - want).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn horizontal_flip_reverses_columns_exactly() {
    let d = device();
    let cfg = AugmentConfig {
        mean: [0.0; 3],
        std: [1.0; 3],
        ..Default::default()
    };
    let x = ramp(&d, 1, 6);
    let flip = BatchParams {
        jitter: vec![[1.0; 6]],
        warps: vec![[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]],
        grayscale: vec![false],
    };
    let y = apply(x.clone(), Some(&flip), 6, &cfg);
    let want = x.flip([3]);
    let diff = (y - want).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn grayscale_turns_the_drawn_images_grey_and_draws_nothing_when_off() {
    let d = device();
    let off = AugmentConfig::default();
    let on = AugmentConfig {
        p_grayscale: 0.5,
        ..off
    };
    // Off, the other parameters are drawn exactly as before the option existed.
    let (a, b) = (off.sample(64, 9, 1.0), on.sample(64, 9, 1.0));
    assert!(a.grayscale.iter().all(|&g| !g));
    let turned = b.grayscale.iter().filter(|&&g| g).count();
    assert!((20..=44).contains(&turned), "{turned} of 64 at p = 0.5");
    assert_eq!(
        a.jitter[0], b.jitter[0],
        "the first image's draws come before its grey draw"
    );
    // A grey image has three equal channels, the luma of its colour input.
    let cfg = AugmentConfig {
        mean: [0.0; 3],
        std: [1.0; 3],
        ..Default::default()
    };
    let x = Tensor::<4>::from_floats([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]], &d); // [1, 3, 1, 2]
    let p = BatchParams {
        jitter: vec![[1.0; 6]],
        warps: vec![IDENTITY],
        grayscale: vec![true],
    };
    let y = apply(x, Some(&p), 2, &cfg).into_data().try_into_vec::<f32>().unwrap();
    // Output [1, 3, 2, 2] after the resize to 2 x 2: each channel equals the luma.
    let (r, g, bl) = (&y[0..4], &y[4..8], &y[8..12]);
    assert_eq!(r, g);
    assert_eq!(g, bl);
    assert!(r.iter().all(|v| (0.0..=0.6).contains(v)), "{r:?}");
}

#[test]
fn same_seed_same_params_and_rates_match_probabilities() {
    let cfg = AugmentConfig::default();
    let a = cfg.sample(64, 9, 1.0);
    let b = cfg.sample(64, 9, 1.0);
    assert_eq!(a.warps, b.warps);
    let big = cfg.sample(4000, 3, 1.0);
    let jittered = big.jitter.iter().filter(|j| j[0] != 1.0 || j[1] != 1.0).count() as f64 / 4000.0;
    assert!((jittered - 0.3).abs() < 0.04, "jitter rate {jittered}");
    for j in &big.jitter {
        assert!(j.iter().all(|f| (0.8..=1.2).contains(f)));
    }
}

#[test]
fn homography_maps_points() {
    let from = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
    let to = [[-0.9, -0.8], [0.85, -1.0], [1.0, 0.9], [-1.0, 0.95]];
    let h = homography(&from, &to);
    for k in 0..4 {
        let [x, y] = from[k];
        let p = [0, 1, 2].map(|r| h[r][0] * x + h[r][1] * y + h[r][2]);
        assert!((p[0] / p[2] - to[k][0]).abs() < 1e-9 && (p[1] / p[2] - to[k][1]).abs() < 1e-9);
    }
}

#[test]
fn output_is_finite_and_resized() {
    let d = device();
    let cfg = AugmentConfig::default();
    let p = cfg.sample(8, 5, 1.0);
    let y = apply(ramp(&d, 8, 12), Some(&p), 16, &cfg);
    assert_eq!(y.dims(), [8, 3, 16, 16]);
    assert!(y.is_finite().all().into_scalar::<bool>());
}
