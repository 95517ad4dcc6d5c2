// The link settings (rpaths, optional CUDA) are shared with model-zoo:
// `cargo:rustc-link-arg` does not propagate to dependents, so the trainer's
// binaries and tests need them from their own build script.
#[path = "../model-zoo/torch_link.rs"]
mod torch_link;

fn main() {
    println!("cargo:rerun-if-changed=../model-zoo/torch_link.rs");
    torch_link::emit();
}
