//! The few layers every model is built from, loaded by diffusers' names.
use super::weights::WeightPath;
use tch::Tensor;

#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: &WeightPath, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let weight = p.get(&[out_dim, in_dim], "weight");
        let bias = bias.then(|| p.get(&[out_dim], "bias"));
        Self { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    pub fn new(
        p: &WeightPath,
        in_ch: i64,
        out_ch: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> Self {
        let weight = p.get(&[out_ch, in_ch, kernel, kernel], "weight");
        let bias = Some(p.get(&[out_ch], "bias"));
        Self {
            weight,
            bias,
            stride,
            padding,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.gemm_is_faster(x) {
            self.forward_as_gemm(x)
        } else {
            self.forward_direct(x)
        }
    }

    /// libtorch's own convolution (oneDNN on a CPU, cuDNN on CUDA).
    fn forward_direct(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    /// The same sums as one im2col and one matrix product over the whole batch.
    fn forward_as_gemm(&self, x: &Tensor) -> Tensor {
        let (batch, _, height, width) = x.size4().expect("a conv2d input is NCHW");
        let size = self.weight.size();
        let (out_ch, kernel) = (size[0], size[2]);
        let (out_h, out_w) = (self.out_len(height, kernel), self.out_len(width, kernel));
        let columns = x.im2col(
            [kernel, kernel],
            [1, 1],
            [self.padding, self.padding],
            [self.stride, self.stride],
        );
        let depth = columns.size()[1];
        // Batch and pixels side by side: one product streams each weight once.
        let columns = columns
            .permute([1, 0, 2])
            .reshape([depth, batch * out_h * out_w]);
        let weight = self.weight.reshape([out_ch, depth]);
        let out = match &self.bias {
            Some(bias) => bias.unsqueeze(1).addmm(&weight, &columns),
            None => weight.matmul(&columns),
        };
        out.view([out_ch, batch, out_h, out_w])
            .permute([1, 0, 2, 3])
            .contiguous()
    }

    fn out_len(&self, input: i64, kernel: i64) -> i64 {
        (input + 2 * self.padding - kernel) / self.stride + 1
    }

    /// oneDNN's direct convolution is slow on a CPU where many input channels meet few output
    /// pixels: the 1280-channel levels of an SD UNet at 4x4 to 16x16 ran 1.1x to 2.5x slower
    /// than im2col + GEMM on libtorch 2.13 (docs/PERFORMANCE.md). Elsewhere oneDNN wins.
    fn gemm_is_faster(&self, x: &Tensor) -> bool {
        let size = self.weight.size();
        let (in_ch, kernel) = (size[1], size[2]);
        if self.weight.device() != tch::Device::Cpu
            || !matches!(self.weight.kind(), tch::Kind::Float | tch::Kind::BFloat16)
            || kernel == 1
            || in_ch < GEMM_MIN_IN_CHANNELS
        {
            return false;
        }
        let Ok((batch, _, height, width)) = x.size4() else {
            return false;
        };
        batch * self.out_len(height, kernel) * self.out_len(width, kernel) <= GEMM_MAX_OUT_PIXELS
    }
}

/// Where im2col + GEMM beats oneDNN (measured on 2 cores, fp32 and bf16; see gemm_is_faster).
const GEMM_MIN_IN_CHANNELS: i64 = 1280;
const GEMM_MAX_OUT_PIXELS: i64 = 512;

#[derive(Debug)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: i64,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(p: &WeightPath, groups: i64, channels: i64, eps: f64) -> Self {
        Self {
            weight: p.get(&[channels], "weight"),
            bias: p.get(&[channels], "bias"),
            groups,
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub dim: i64,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: &WeightPath, dim: i64, eps: f64) -> Self {
        Self {
            weight: p.get(&[dim], "weight"),
            bias: Some(p.get(&[dim], "bias")),
            dim,
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            self.bias.as_ref(),
            self.eps,
            true,
        )
    }
}

#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(p: &WeightPath, count: i64, dim: i64) -> Self {
        Self {
            weight: p.get(&[count, dim], "weight"),
        }
    }

    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn conv(in_ch: i64, out_ch: i64, kernel: i64, stride: i64, padding: i64, kind: Kind) -> Conv2d {
        let options = (kind, Device::Cpu);
        Conv2d {
            weight: Tensor::randn([out_ch, in_ch, kernel, kernel], options) * 0.02,
            bias: Some(Tensor::randn([out_ch], options)),
            stride,
            padding,
        }
    }

    fn worst_difference(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
            .abs()
            .max()
            .double_value(&[])
    }

    #[test]
    fn gemm_convolution_matches_libtorch() {
        tch::manual_seed(7);
        // (batch, in, out, side, kernel, stride, padding): the UNet's 3x3 convs, its stride-2
        // downsampler, odd sides, a 1x1 and no padding.
        let cases = [
            (2, 1280, 1280, 4, 3, 1, 1),
            (1, 2560, 1280, 8, 3, 1, 1),
            (2, 1280, 1280, 8, 3, 2, 1),
            (2, 64, 32, 7, 3, 1, 1),
            (3, 16, 8, 5, 3, 1, 0),
            (2, 32, 16, 6, 1, 1, 0),
        ];
        for (batch, in_ch, out_ch, side, kernel, stride, padding) in cases {
            let layer = conv(in_ch, out_ch, kernel, stride, padding, Kind::Float);
            let x = Tensor::randn([batch, in_ch, side, side], (Kind::Float, Device::Cpu));
            let direct = layer.forward_direct(&x);
            let gemm = layer.forward_as_gemm(&x);
            let gap = worst_difference(&direct, &gemm);
            assert!(
                gap < 1e-4,
                "{batch}x{in_ch}x{side} k{kernel} s{stride}: {gap}"
            );
        }
        let mut biasless = conv(1280, 64, 3, 1, 1, Kind::Float);
        biasless.bias = None;
        let x = Tensor::randn([2, 1280, 4, 4], (Kind::Float, Device::Cpu));
        let gap = worst_difference(&biasless.forward_direct(&x), &biasless.forward_as_gemm(&x));
        assert!(gap < 1e-4, "without bias: {gap}");
    }

    #[test]
    fn gemm_convolution_matches_libtorch_in_bf16() {
        tch::manual_seed(8);
        let layer = conv(1280, 1280, 3, 1, 1, Kind::BFloat16);
        let x = Tensor::randn([2, 1280, 8, 8], (Kind::BFloat16, Device::Cpu));
        let direct = layer.forward_direct(&x);
        let gap = worst_difference(&direct, &layer.forward_as_gemm(&x));
        let scale = direct.to_kind(Kind::Float).abs().max().double_value(&[]);
        assert!(
            gap < scale * 0.02,
            "bf16 gap {gap} against values up to {scale}"
        );
    }

    #[test]
    fn gemm_is_chosen_only_for_many_channels_and_few_pixels() {
        let deep = conv(1280, 1280, 3, 1, 1, Kind::Float);
        let input =
            |batch, side| Tensor::zeros([batch, 1280, side, side], (Kind::Float, Device::Cpu));
        assert!(deep.gemm_is_faster(&input(2, 8)));
        assert!(deep.gemm_is_faster(&input(2, 16)));
        assert!(!deep.gemm_is_faster(&input(2, 32)));
        let shallow = conv(320, 320, 3, 1, 1, Kind::Float);
        let x = Tensor::zeros([2, 320, 4, 4], (Kind::Float, Device::Cpu));
        assert!(!shallow.gemm_is_faster(&x));
        let pointwise = conv(1280, 1280, 1, 1, 0, Kind::Float);
        assert!(!pointwise.gemm_is_faster(&input(2, 4)));
        let half = conv(1280, 1280, 3, 1, 1, Kind::Half);
        let x = Tensor::zeros([2, 1280, 4, 4], (Kind::Half, Device::Cpu));
        assert!(!half.gemm_is_faster(&x));
        // The same layer's forward gives the same numbers whichever path it takes.
        let x = Tensor::randn([2, 1280, 4, 4], (Kind::Float, Device::Cpu));
        assert!(worst_difference(&deep.forward(&x), &deep.forward_direct(&x)) < 1e-4);
    }
}
