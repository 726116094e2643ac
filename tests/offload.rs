//! Model CPU offload (`--low-memory` on CUDA): the same images as without it, diffusers'
//! images, components moved in the documented order, and a memory estimate that counts the
//! largest component instead of all of them.
//!
//! Without a GPU host and device are one, so the weights wait in fp64 (`park_offloaded_as`):
//! a weight the offload failed to record or to move in would stay fp64 and fail the render,
//! as it would stay in host memory on a GPU. With EASEL_TEST_DEVICE=cuda the moves are real.
mod common;

use common::{assert_close, cached_fixture, max_abs_diff, test_device, tiny_sd1, Reference};
use easel::engine::img2img::InitImage;
use easel::engine::memory_estimate::safetensors_bytes;
use easel::engine::offload::{Component, Place};
use easel::engine::pipeline::{
    Image, LoadOptions, MemoryOptions, Output, StableDiffusion, TextToImage,
};
use easel::engine::weights::component_files;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind};

fn load(dir: &Path, offload: bool) -> StableDiffusion {
    let device = test_device();
    let options = LoadOptions {
        memory: MemoryOptions {
            offload,
            ..MemoryOptions::default()
        },
        ..LoadOptions::default()
    };
    let sd = StableDiffusion::load_with(dir, device, Kind::Float, &options).expect("loads");
    if offload && device == Device::Cpu {
        sd.park_offloaded_as(Kind::Double).expect("parks");
        sd.offload_log();
    }
    sd
}

/// pipeline.json's batch-of-two case with a negative prompt.
fn request() -> TextToImage {
    TextToImage {
        prompt: "a lighthouse at dusk, oil painting".into(),
        negative_prompt: "blurry, low quality".into(),
        steps: 4,
        guidance_scale: 5.0,
        seed: 42,
        width: 64,
        height: 64,
        batch_size: 2,
        sampler: "euler_a".parse().expect("a sampler"),
        clip_skip: 1,
        ..TextToImage::default()
    }
}

fn render(sd: &StableDiffusion, request: &TextToImage) -> Output {
    sd.generate(request, &mut |_| {}, &AtomicBool::new(false))
        .expect("renders")
}

/// On the CPU the very same numbers; on a GPU, the same kernels on the same data.
fn assert_same(what: &str, offloaded: &Output, plain: &Output) {
    let diff = max_abs_diff(&offloaded.float_images, &plain.float_images);
    if test_device() == Device::Cpu {
        assert_eq!(diff, 0.0, "{what}: offload changed the image");
        let pixels = |o: &Output| o.images.iter().map(|i| i.rgb.clone()).collect::<Vec<_>>();
        assert_eq!(pixels(offloaded), pixels(plain), "{what}: pixels differ");
    } else {
        assert!(diff <= 1e-5, "{what}: max abs diff {diff:e}");
    }
}

fn moves(sd: &StableDiffusion) -> Vec<(Component, Place)> {
    sd.offload_log()
        .iter()
        .map(|m| (m.component, m.to))
        .collect()
}

fn on_off(components: &[&[Component]]) -> Vec<(Component, Place)> {
    components
        .iter()
        .flat_map(|group| {
            let on = group.iter().map(|&c| (c, Place::Execution));
            let off = group.iter().map(|&c| (c, Place::Host));
            on.chain(off).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn offloaded_sd1_renders_the_same_image_moving_one_component_at_a_time() {
    let _guard = tch::no_grad_guard();
    let r = request();
    let plain = render(&load(&tiny_sd1(), false), &r);
    let sd = load(&tiny_sd1(), true);
    let offloaded = render(&sd, &r);
    assert_same("sd1", &offloaded, &plain);
    assert_close(
        "sd1 offloaded vs diffusers",
        &offloaded.float_images,
        &Reference::open("pipeline.safetensors").get("euler_a-s42-64x64-cfg5.0-b2"),
        1e-3,
    );
    assert_eq!(
        moves(&sd),
        on_off(&[
            &[Component::TextEncoder],
            &[Component::Unet],
            &[Component::Vae]
        ]),
        "each component moves in right before it runs and out right after"
    );
    // A second render moves them again, the same way.
    assert_same("sd1, again", &render(&sd, &r), &plain);
    assert_eq!(moves(&sd).len(), 6);
}

/// img2img encodes the image with the VAE before the loop: it moves in and out twice.
#[test]
fn offloaded_img2img_moves_the_vae_out_before_the_unet_runs() {
    let _guard = tch::no_grad_guard();
    let rgb = (0..64 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let r = TextToImage {
        batch_size: 1,
        init: Some(InitImage {
            image: Image {
                width: 64,
                height: 64,
                rgb,
            },
            strength: 0.5,
            mask: None,
        }),
        ..request()
    };
    let plain = render(&load(&tiny_sd1(), false), &r);
    let sd = load(&tiny_sd1(), true);
    assert_same("img2img", &render(&sd, &r), &plain);
    assert_eq!(
        moves(&sd),
        on_off(&[
            &[Component::TextEncoder],
            &[Component::Vae],
            &[Component::Unet],
            &[Component::Vae]
        ])
    );
}

#[test]
fn offloaded_sdxl_moves_both_text_encoders_together() {
    let _guard = tch::no_grad_guard();
    let dir = cached_fixture("tiny-sdxl");
    let r = TextToImage {
        batch_size: 1,
        clip_skip: 0,
        ..request()
    };
    let plain = render(&load(&dir, false), &r);
    let sd = load(&dir, true);
    assert_same("sdxl", &render(&sd, &r), &plain);
    assert_eq!(
        moves(&sd),
        on_off(&[
            &[Component::TextEncoder, Component::TextEncoder2],
            &[Component::Unet],
            &[Component::Vae]
        ])
    );
}

#[test]
fn turning_offload_on_after_loading_gives_the_same_image() {
    let _guard = tch::no_grad_guard();
    let r = request();
    let mut sd = load(&tiny_sd1(), false);
    let plain = render(&sd, &r);
    sd.set_memory_options(MemoryOptions {
        offload: true,
        ..MemoryOptions::default()
    });
    let offloaded = render(&sd, &r);
    assert_same("offload turned on", &offloaded, &plain);
    let log = moves(&sd);
    // All three parked when the render starts, then each moved in and out.
    assert_eq!(log.len(), 3 + 6, "{log:?}");
    assert!(log[..3].iter().all(|(_, p)| *p == Place::Host), "{log:?}");
    sd.set_memory_options(MemoryOptions::default());
    assert_same("offload turned off", &render(&sd, &r), &plain);
}

fn header_bytes(dir: &Path, component: &str, stem: &str) -> u64 {
    let files = component_files(&dir.join(component), stem, None).expect("weights found");
    files
        .iter()
        .map(|f| safetensors_bytes(f, Kind::Float).expect("header reads"))
        .sum()
}

#[test]
fn the_estimate_with_offload_counts_the_largest_component() {
    let dir = tiny_sd1();
    let components = [
        header_bytes(&dir, "text_encoder", "model"),
        header_bytes(&dir, "unet", "diffusion_pytorch_model"),
        header_bytes(&dir, "vae", "diffusion_pytorch_model"),
    ];
    let r = request();
    let (_, all) = load(&dir, false).estimate_memory(&r);
    let (_, offloaded) = load(&dir, true).estimate_memory(&r);
    assert_eq!(all.activations, offloaded.activations);
    assert_eq!(all.peak, components.iter().sum::<u64>() + all.activations);
    assert_eq!(
        offloaded.peak,
        components.iter().copied().max().expect("three") + offloaded.activations
    );
    assert!(offloaded.peak < all.peak);
}

#[test]
fn low_memory_offloads_on_cuda_only() {
    assert!(!MemoryOptions::new(false, true, Device::Cpu).offload);
    assert!(MemoryOptions::new(false, true, Device::Cuda(0)).offload);
    assert!(!MemoryOptions::new(true, false, Device::Cuda(0)).offload);
}
