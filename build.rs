// Bake libtorch's lib folder into the binary's rpath so `easel` runs without
// LD_LIBRARY_PATH, wherever scripts/setup found libtorch.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let path = std::fs::canonicalize(&libtorch).unwrap_or_else(|_| libtorch.clone().into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}/lib", path.display());
    }
}
