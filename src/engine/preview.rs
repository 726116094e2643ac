//! Cheap previews of latents: a linear map from the 4 latent channels to RGB, no VAE.
use super::pipeline::Image;
use tch::{Device, Kind, Tensor};

/// Least-squares latent -> RGB factors for SD 1.x/2.x latents, as AUTOMATIC1111's
/// "approx cheap" preview uses; good enough to watch an image form.
const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// The first image of a latent batch [N, C, H, W] as RGB at latent resolution.
pub fn latent_preview(latents: &Tensor) -> Image {
    let first = latents.get(0).to_device(Device::Cpu).to_kind(Kind::Float);
    let (c, h, w) = (first.size()[0], first.size()[1], first.size()[2]);
    let factors: Vec<f32> = SD_LATENT_RGB.iter().flatten().copied().collect();
    let factors = Tensor::from_slice(&factors).view([4, 3]);
    // Other latent layouts: show the first channels as they are.
    let rgb = if c == 4 {
        first.permute([1, 2, 0]).matmul(&factors)
    } else {
        first.narrow(0, 0, c.min(3)).permute([1, 2, 0]) * 0.5
    };
    let rgb = ((rgb + 1.0) * 127.5)
        .clamp(0.0, 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .contiguous();
    let channels = rgb.size()[2];
    let len = (h * w * channels) as usize;
    let mut bytes = vec![0u8; len];
    rgb.copy_data(&mut bytes, len);
    if channels < 3 {
        bytes = bytes
            .chunks(channels as usize)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect();
    }
    Image {
        width: w as u32,
        height: h as u32,
        rgb: bytes,
    }
}
