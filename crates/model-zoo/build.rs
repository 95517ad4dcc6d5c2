#[path = "torch_link.rs"]
mod torch_link;

fn main() {
    println!("cargo:rerun-if-changed=torch_link.rs");
    torch_link::emit();
}
