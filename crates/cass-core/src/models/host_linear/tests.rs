use burn::nn::LinearConfig;
use burn::tensor::Distribution;

use super::*;
use crate::testing::tensor_rel_err as rel_err;

/// Values and the gradients of the input, weight and bias against burn's `Linear`, with and
/// without a bias, over several leading shapes (flattened to three dimensions), one row, widths
/// that are not a multiple of any vector width, and products large enough to be split across
/// threads (`cpu-small`'s and ViT-Ti's MLP widths).
#[test]
fn matches_burns_linear_in_value_and_gradients() {
    let d = Device::flex().autodiff();
    // (input shape, d_out, bias)
    let cases: [(&[usize], usize, bool); 6] = [
        (&[5, 7], 3, true),
        (&[2, 5, 7], 9, false),
        (&[1, 1, 13], 4, true),
        (&[2, 3, 4, 6], 5, true),
        (&[4, 17, 96], 384, true),
        (&[3, 33, 192], 576, false),
    ];
    for (shape, d_out, bias) in cases {
        let d_in = *shape.last().unwrap();
        let layer = LinearConfig::new(d_in, d_out).with_bias(bias).init(&d);
        let case = format!("{shape:?} -> {d_out}, bias {bias}");
        let x = Tensor::<3>::random(
            [shape[..shape.len() - 2].iter().product(), shape[shape.len() - 2], d_in],
            Distribution::Normal(0.0, 1.0),
            &d,
        )
        .require_grad();
        let x_in = x.clone();
        let (ours, theirs) = (linear(&layer, x_in.clone()), layer.forward(x_in));
        let err = rel_err(ours.clone().inner(), theirs.clone().inner());
        assert!(err < 1e-5, "{case}: output differs by {err}");
        let probe = Tensor::<3>::random(theirs.dims(), Distribution::Normal(0.0, 1.0), &d);
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_theirs = (theirs * probe).sum().backward();
        let dx = rel_err(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
        let w = layer.weight.val();
        let dw = rel_err(w.grad(&g_ours).unwrap(), w.grad(&g_theirs).unwrap());
        assert!(
            dx < 1e-5 && dw < 1e-5,
            "{case}: gradients differ (input {dx}, weight {dw})"
        );
        if let Some(b) = &layer.bias {
            let b = b.val();
            let db = rel_err(b.grad(&g_ours).unwrap(), b.grad(&g_theirs).unwrap());
            assert!(db < 1e-5, "{case}: bias gradient differs by {db}");
        }
    }
}

/// 2- and 4-dimensional inputs keep their leading dimensions; without autodiff (evaluation) it
/// is the same function.
#[test]
fn keeps_the_leading_dimensions_on_a_plain_device() {
    let d = Device::flex();
    let layer = LinearConfig::new(6, 5).init(&d);
    let x2 = Tensor::<2>::random([7, 6], Distribution::Normal(0.0, 1.0), &d);
    let err = rel_err(linear(&layer, x2.clone()), layer.forward(x2));
    assert!(err < 1e-5, "2-d output differs by {err}");
    let x4 = Tensor::<4>::random([2, 3, 4, 6], Distribution::Normal(0.0, 1.0), &d);
    let ours = linear(&layer, x4.clone());
    assert_eq!(ours.dims(), [2, 3, 4, 5]);
    let err = rel_err(ours, layer.forward(x4));
    assert!(err < 1e-5, "4-d output differs by {err}");
}
