use burn::tensor::Distribution;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::*;
use crate::testing::tensor_rel_err as rel_err;

/// burn's composed attention, as the ViT computed it before: `qkv` split into heads, burn's
/// scaled dot-product attention, the heads side by side again.
fn reference(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, n, three_d] = qkv.dims();
    let (d, hd) = (three_d / 3, three_d / 3 / heads);
    let qkv = qkv.reshape([b, n, 3, heads, hd]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, heads, n, hd]);
    let out = attention(part(0), part(1), part(2), None, None, AttentionModuleOptions::default());
    out.swap_dims(1, 2).reshape([b, n, d])
}

/// Values and the gradient of `qkv` against burn's, over one token, a single head, heads
/// narrower than any vector width, `cpu-small`'s and ViT-Ti's shapes, batch 1.
#[test]
fn matches_burns_attention_in_value_and_gradient() {
    let d = Device::flex().autodiff();
    // (batch, tokens, heads, head_dim)
    for (b, n, h, hd) in [
        (2, 5, 3, 4),
        (3, 1, 2, 8),
        (1, 17, 1, 32),
        (4, 17, 3, 32),
        (2, 37, 3, 64),
        (1, 9, 4, 3),
    ] {
        let qkv = Tensor::<3>::random([b, n, 3 * h * hd], Distribution::Normal(0.0, 1.5), &d).require_grad();
        let ours = host_attention(qkv.clone(), h);
        let theirs = reference(qkv.clone(), h);
        let case = format!("b{b} n{n} h{h} hd{hd}");
        assert_eq!(ours.dims(), theirs.dims(), "{case}: shape");
        let err = rel_err(ours.clone().inner(), theirs.clone().inner());
        assert!(err < 1e-5, "{case}: output differs by {err}");
        let probe = Tensor::<3>::random(theirs.dims(), Distribution::Normal(0.0, 1.0), &d);
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_theirs = (theirs * probe).sum().backward();
        let err = rel_err(qkv.grad(&g_ours).unwrap(), qkv.grad(&g_theirs).unwrap());
        assert!(err < 1e-5, "{case}: gradient differs by {err}");
    }
}

/// Without autodiff (evaluation, embeddings) it is the same function, and scores far from zero
/// do not overflow the softmax.
#[test]
fn runs_on_a_plain_flex_device_with_large_scores() {
    let d = Device::flex();
    let qkv = Tensor::<3>::random([2, 7, 3 * 2 * 8], Distribution::Normal(0.0, 30.0), &d);
    let ours = host_attention(qkv.clone(), 2);
    let values = ours.clone().into_data().try_to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "finite outputs");
    let err = rel_err(ours, reference(qkv, 2));
    assert!(err < 1e-5, "output differs by {err}");
}
