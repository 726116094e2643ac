//! `scripts/bench --decode-size N`'s easel side: a model's VAE alone decoding random latents to
//! N x N, in diffusers' tiles wherever the image is larger than one (as `enable_tiling()`), and
//! printing `{"load_s": .., "decode_s": ..}`. Usage: decode MODEL_DIR SIZE fp32|bf16
use easel::engine::loader::ModelSource;
use easel::engine::models::vae::{AutoencoderKl, VaeConfig};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, size, dtype] = args.as_slice() else {
        anyhow::bail!("usage: decode MODEL_DIR SIZE fp32|bf16");
    };
    let size: i64 = size.parse()?;
    let kind = match dtype.as_str() {
        "fp32" => Kind::Float,
        "bf16" => Kind::BFloat16,
        other => anyhow::bail!("dtype {other}: fp32 or bf16"),
    };
    let _no_grad = tch::no_grad_guard();
    let start = Instant::now();
    let source = ModelSource::open(Path::new(model), None)?;
    let config: VaeConfig = source.config("vae", "config.json", VaeConfig::validate)?;
    let weights = source.weights("vae", "diffusion_pytorch_model", Device::Cpu, kind)?;
    let vae = AutoencoderKl::new(&weights.root(), &config)?;
    weights.finish()?;
    let load_s = start.elapsed().as_secs_f64();
    tch::manual_seed(1);
    let factor = vae.latent_scale_factor();
    let latents = Tensor::randn([1, 4, size / factor, size / factor], (kind, Device::Cpu));
    let start = Instant::now();
    let image = vae.decode_tiled(&latents, &vae.default_tiling())?;
    let decode_s = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        image.size() == [1, 3, size, size],
        "decoded {:?}",
        image.size()
    );
    println!("{{\"load_s\": {load_s}, \"decode_s\": {decode_s}}}");
    Ok(())
}
