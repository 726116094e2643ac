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
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}

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
