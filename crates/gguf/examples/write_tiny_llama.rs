//! Writes the tiny llama test model: `cargo run -p gguf --example write_tiny_llama -- OUT.gguf`.

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "tiny-llama.gguf".into());
    let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
    std::fs::write(&out, &bytes).expect("write the model");
    println!("{out}: {} bytes", bytes.len());
}
