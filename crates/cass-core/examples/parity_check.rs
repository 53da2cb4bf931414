//! Compares our forward pass with timm's for a model written by `parity/make_fixtures.py --full`
//! (`<base>.json`, `<base>.safetensors`, `<base>.io.safetensors`). Prints one JSON object with
//! the largest differences relative to the largest reference value.
//!
//! cargo run --example parity_check -- /tmp/dir/resnet50 [cpu|cuda|wgpu]
//!
//! The optional device checks a GPU build (its fused, autotuned kernels) against the same files
//! (`bench_step --what parity --fixture BASE` does the same inside the GPU benchmark binary).

use std::path::PathBuf;

use cass_core::BackendChoice;
use cass_core::device::resolve;
use cass_core::testing::parity::parity_errors;

fn main() {
    let base = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: parity_check <base path> [device]"),
    );
    let choice: BackendChoice =
        serde_json::from_str(&format!("\"{}\"", std::env::args().nth(2).as_deref().unwrap_or("cpu"))).expect("device");
    let device = resolve(choice).expect("device");
    let (logits, features) = parity_errors(&base, &device).expect("parity files");
    println!(
        "{}",
        serde_json::json!({ "logits_rel_err": logits, "features_rel_err": features, "within_1e-4": logits <= 1e-4 && features <= 1e-4 })
    );
}
