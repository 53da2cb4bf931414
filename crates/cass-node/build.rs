fn main() {
    napi_build::setup();
    // A CUDA build links LLVM's static libraries (cubecl's kernel compiler). Where those were
    // compiled against a newer glibc than the build machine's, scripts/cuda-toolchain.sh makes an
    // object that forwards the missing entry points, and the packaging passes it here: only this
    // crate relinks when it changes, where RUSTFLAGS would rebuild every dependency.
    println!("cargo:rerun-if-env-changed=CASS_EXTRA_LINK_OBJECT");
    if let Ok(object) = std::env::var("CASS_EXTRA_LINK_OBJECT") {
        println!("cargo:rustc-link-arg={object}");
    }
}
