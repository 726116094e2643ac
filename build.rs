// Bake libtorch's lib folder into the binary's rpath so `easel` runs without
// LD_LIBRARY_PATH, wherever scripts/setup found libtorch.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let path = std::fs::canonicalize(&libtorch).unwrap_or_else(|_| libtorch.clone().into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}/lib", path.display());
        // torch-sys asks for torch_cuda, but the linker's --as-needed drops it (no symbol of
        // it is called directly), and without it libtorch sees no CUDA device: keep it.
        if path.join("lib/libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
