//! A random-weight pipeline with the real SDXL base shapes (about 7 GB in fp16) loads with no
//! missing, unexpected or misshapen tensor: easel's modules take exactly the hub's names and
//! shapes. scripts/test makes it once in the per-user cache; it is not committed. Components
//! load one at a time (bf16 on the CPU) so the test never holds more than the UNet in memory.
mod common;

use easel::engine::family::{Family, ModelInfo};
use easel::engine::loader::ModelFolder;
use easel::engine::models::clip::{ClipTextModel, ClipTextModelWithProjection};
use easel::engine::models::clip_config::ClipTextConfig;
use easel::engine::models::unet::UNet2DConditionModel;
use easel::engine::models::unet_config::UNetConfig;
use easel::engine::models::vae::AutoencoderKl;
use easel::engine::models::vae_config::VaeConfig;
use easel::engine::tokenizer::ClipTokenizer;
use tch::{Device, Kind};

#[test]
fn sdxl_shaped_weights_load_by_name() {
    let _guard = tch::no_grad_guard();
    let dir = common::cached_fixture("sdxl-shapes");
    let info = ModelInfo::detect(&dir).unwrap();
    assert_eq!(
        (info.family, info.turbo, info.inpainting),
        (Family::Sdxl, false, false)
    );
    let folder = ModelFolder::open(&dir).unwrap();
    let (device, kind) = (Device::Cpu, Kind::BFloat16);

    let config = ClipTextConfig::from_file(&folder.config("text_encoder", "config.json")).unwrap();
    let weights = folder
        .weights("text_encoder", "model", device, kind)
        .unwrap();
    ClipTextModel::new(&weights.root(), &config).unwrap();
    weights
        .finish()
        .unwrap_or_else(|e| panic!("text_encoder: {e}"));

    let config =
        ClipTextConfig::from_file(&folder.config("text_encoder_2", "config.json")).unwrap();
    assert_eq!((config.hidden_size, config.projection_dim), (1280, 1280));
    let weights = folder
        .weights("text_encoder_2", "model", device, kind)
        .unwrap();
    ClipTextModelWithProjection::new(&weights.root(), &config).unwrap();
    weights
        .finish()
        .unwrap_or_else(|e| panic!("text_encoder_2: {e}"));
    let pad = ClipTokenizer::from_folder(&folder.component("tokenizer_2")).unwrap();
    assert_eq!(pad.pad_id(), pad.tokenize("!")[0]);

    let vae_config = VaeConfig::from_file(&folder.config("vae", "config.json")).unwrap();
    assert_eq!(vae_config.scaling_factor, 0.13025);
    let weights = folder
        .weights("vae", "diffusion_pytorch_model", device, kind)
        .unwrap();
    AutoencoderKl::new(&weights.root(), &vae_config).unwrap();
    weights.finish().unwrap_or_else(|e| panic!("vae: {e}"));

    let unet_config = UNetConfig::from_file(&folder.config("unet", "config.json")).unwrap();
    let weights = folder
        .weights("unet", "diffusion_pytorch_model", device, kind)
        .unwrap();
    UNet2DConditionModel::new(&weights.root(), &unet_config).unwrap();
    weights.finish().unwrap_or_else(|e| panic!("unet: {e}"));

    let d = info.defaults(&unet_config, vae_config.latent_scale_factor());
    assert_eq!((d.width, d.height, d.steps, d.cfg), (1024, 1024, 20, 5.0));
}
