//! Networks from configs and from weight files: what fine-tuning, DINO, and restoring a
//! checkpoint all start with, kept here below them so that none of them depends on another.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::prelude::*;

use super::{Arch, Network, ResNetConfig, VitConfig, init_seeded};
use crate::checkpoint::{self, save_weights};
use crate::error::CassError;

/// Builds a network, after checking what its config implies ([`crate::models::budget`]): configs
/// reach here from checkpoints' `state.json` too, which nothing else validated.
pub fn build_network(
    arch: Arch,
    cnn: &ResNetConfig,
    vit: &VitConfig,
    device: &Device,
    seed: u64,
) -> Result<Network, CassError> {
    crate::models::budget::check_network(arch, cnn, vit, vit.image_size, 1)?;
    Ok(init_seeded(device, seed, |d| match arch {
        Arch::Cnn => Network::Cnn(cnn.init(d)),
        Arch::Vit => Network::Vit(vit.init(d)),
    }))
}

/// `net` with the weights of the safetensors file at `path` (names in `ignore` left as they are).
pub fn load_into(net: Network, path: &Path, ignore: &HashSet<String>) -> Result<Network, CassError> {
    Ok(match net {
        Network::Cnn(m) => Network::Cnn(checkpoint::load_weights(m, path, ignore)?),
        Network::Vit(m) => Network::Vit(checkpoint::load_weights(m, path, ignore)?),
    })
}

/// `net`'s weights as a safetensors file at `path` (written atomically), with `meta`.
pub fn save_network(net: &Network, path: &Path, meta: HashMap<String, String>) -> Result<(), CassError> {
    match net {
        Network::Cnn(m) => save_weights(m, path, meta),
        Network::Vit(m) => save_weights(m, path, meta),
    }
}
