//! Model CPU offload, as diffusers' `enable_model_cpu_offload()`: each component's weights wait
//! in host memory and move to the GPU only while that component runs, so the GPU holds the
//! largest component (plus activations) instead of all of them.
//!
//! The order differs from diffusers' in one point, on purpose: diffusers moves a component off
//! when the next one in `text_encoder->unet->vae` starts (so in img2img the VAE that encoded the
//! image stays on the GPU through the whole denoising loop); here a component moves back to the
//! host as soon as it has run. A txt2img render makes the same transfers either way:
//! text encoder(s) on, off, UNet on, off, VAE on, off.
//!
//! Models hold plain tensors, not a parameter store. The loader records every tensor it hands
//! out (shallow clones share the model's TensorImpl), and a move is `set_data`, which swaps the
//! storage under every handle of that impl, as PyTorch's `param.data = param.data.to(device)`.
//! A host copy of each tensor is kept, so moving back is free: no device-to-host copy.
use super::error::Result;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// A part of the pipeline that moves as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    TextEncoder,
    TextEncoder2,
    Unet,
    Vae,
    /// The fp32 VAE loaded when a half-precision decode overflows.
    VaeFp32,
    /// TAESD decoding instead of the VAE (`--fast-decoder`).
    FastDecoder,
}

impl Component {
    /// diffusers' name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
            Self::Unet => "unet",
            Self::Vae => "vae",
            Self::VaeFp32 => "vae (fp32)",
            Self::FastDecoder => "fast decoder",
        }
    }
}

/// Where a move took a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The device the models compute on.
    Execution,
    /// Host memory, waiting.
    Host,
}

/// One move, as [`Offload::log`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub component: Component,
    pub to: Place,
    pub device: Device,
}

struct Part {
    /// Share their TensorImpl with the model's tensors.
    handles: Vec<Tensor>,
    /// The kind each handle computes in.
    kinds: Vec<Kind>,
    /// Separate impls holding the host storage; empty until first parked.
    host: Vec<Tensor>,
    parked: bool,
    bytes: u64,
}

struct State {
    enabled: bool,
    parts: BTreeMap<Component, Part>,
    log: Vec<Move>,
    /// Test hook: parked tensors held in this kind (see [`Offload::park_as`]).
    host_kind: Option<Kind>,
}

/// The registry of components' tensors and the switch for moving them.
pub struct Offload {
    device: Device,
    state: Mutex<State>,
}

/// A component on the execution device for as long as this lives; dropping it moves the
/// component back to the host.
#[must_use = "the components move back to the host when this is dropped"]
pub struct OnDevice<'a> {
    offload: &'a Offload,
    components: Vec<Component>,
}

impl Drop for OnDevice<'_> {
    fn drop(&mut self) {
        let mut state = self.offload.lock();
        for &c in &self.components {
            // A failed move back leaves the component on the device: more memory, same images.
            let _ = state.park(c);
        }
    }
}

impl Offload {
    /// Off, for models computing on `device`.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            state: Mutex::new(State {
                enabled: false,
                parts: BTreeMap::new(),
                log: Vec::new(),
                host_kind: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.lock().enabled
    }

    /// Turns offload on (every component to the host) or off (every component to the device,
    /// host copies freed).
    pub fn set_enabled(&self, on: bool) -> Result<()> {
        let mut state = self.lock();
        if state.enabled == on {
            return Ok(());
        }
        let components: Vec<Component> = state.parts.keys().copied().collect();
        for c in components {
            if on {
                state.park(c)?;
            } else {
                state.unpark(c, self.device)?;
                if let Some(part) = state.parts.get_mut(&c) {
                    part.host.clear();
                }
            }
        }
        state.enabled = on;
        Ok(())
    }

    /// Records a component's tensors (replacing any earlier ones: LoRAs rebuild models).
    /// `on_host` says where the loader put them; they are moved to match the switch.
    pub fn register(
        &self,
        component: Component,
        tensors: Vec<Tensor>,
        on_host: bool,
    ) -> Result<()> {
        let bytes = tensors
            .iter()
            .map(|t| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64)
            .sum();
        let mut state = self.lock();
        let part = Part {
            kinds: tensors.iter().map(Tensor::kind).collect(),
            handles: tensors,
            host: Vec::new(),
            parked: false,
            bytes,
        };
        state.parts.insert(component, part);
        if on_host || state.enabled {
            // A loader's host tensors are parked already; this only keeps their host copies.
            state.park_quietly(component, on_host)?;
        }
        if !state.enabled {
            state.unpark(component, self.device)?;
            if let Some(part) = state.parts.get_mut(&component) {
                part.host.clear();
            }
        }
        Ok(())
    }

    /// Forgets a component (a fast decoder removed or replaced by one built elsewhere).
    pub fn unregister(&self, component: Component) {
        self.lock().parts.remove(&component);
    }

    /// Moves `components` to the execution device until the guard drops (nothing when offload
    /// is off or a component is not registered).
    pub fn run(&self, components: &[Component]) -> Result<OnDevice<'_>> {
        let mut state = self.lock();
        let mut moved = Vec::new();
        if state.enabled {
            for &c in components {
                if state.parts.contains_key(&c) {
                    if let Err(e) = state.unpark(c, self.device) {
                        drop(state);
                        drop(OnDevice {
                            offload: self,
                            components: moved,
                        });
                        return Err(e);
                    }
                    moved.push(c);
                }
            }
        }
        Ok(OnDevice {
            offload: self,
            components: moved,
        })
    }

    /// The bytes of a registered component's tensors (in the kind they compute in).
    pub fn bytes(&self, component: Component) -> Option<u64> {
        self.lock().parts.get(&component).map(|p| p.bytes)
    }

    /// Every move since the last call, oldest first.
    pub fn take_log(&self) -> Vec<Move> {
        std::mem::take(&mut self.lock().log)
    }

    /// For tests on a machine without a GPU, where host and device are the same: parked
    /// tensors are held in `kind` (e.g. `Kind::Double`) and converted back when moved in, so a
    /// weight the offload failed to record or move would have the wrong kind and fail the
    /// render, as it would sit on the wrong device on a GPU.
    #[doc(hidden)]
    pub fn park_as(&self, kind: Kind) -> Result<()> {
        let mut state = self.lock();
        state.host_kind = Some(kind);
        let components: Vec<Component> = state.parts.keys().copied().collect();
        for c in components {
            let was_parked = state.parts.get(&c).is_some_and(|p| p.parked);
            if let Some(part) = state.parts.get_mut(&c) {
                part.host.clear();
            }
            if was_parked {
                state.unpark(c, self.device)?;
                state.park(c)?;
            }
        }
        Ok(())
    }
}

impl State {
    fn park(&mut self, c: Component) -> Result<()> {
        self.park_quietly(c, false)
    }

    /// Moves `c` to the host; `quiet` skips the log (a load that put it there already).
    fn park_quietly(&mut self, c: Component, quiet: bool) -> Result<()> {
        let host_kind = self.host_kind;
        let Some(part) = self.parts.get_mut(&c) else {
            return Ok(());
        };
        if part.parked {
            return Ok(());
        }
        if part.host.is_empty() {
            // detach: a separate impl sharing the storage (to_device alone may return the very
            // same impl when the tensor is on the host already).
            part.host = part
                .handles
                .iter()
                .zip(&part.kinds)
                .map(|(h, &k)| {
                    Ok(h.f_to_device(Device::Cpu)?
                        .f_to_kind(host_kind.unwrap_or(k))?
                        .detach())
                })
                .collect::<Result<_>>()?;
        }
        for (handle, host) in part.handles.iter_mut().zip(&part.host) {
            handle.f_set_data(host)?;
        }
        part.parked = true;
        if !quiet {
            self.log.push(Move {
                component: c,
                to: Place::Host,
                device: Device::Cpu,
            });
        }
        Ok(())
    }

    fn unpark(&mut self, c: Component, device: Device) -> Result<()> {
        let Some(part) = self.parts.get_mut(&c) else {
            return Ok(());
        };
        if !part.parked {
            return Ok(());
        }
        for ((handle, host), &kind) in part.handles.iter_mut().zip(&part.host).zip(&part.kinds) {
            handle.f_set_data(&host.f_to_device(device)?.f_to_kind(kind)?)?;
        }
        part.parked = false;
        self.log.push(Move {
            component: c,
            to: Place::Execution,
            device,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nn::Linear;
    use crate::engine::weights::Weights;

    fn tiny_linear_file(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("linear.safetensors");
        let weight = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([3, 2]);
        let bias = Tensor::from_slice(&[0.5f32, -0.5, 1.0]);
        Tensor::write_safetensors(&[("l.weight", &weight), ("l.bias", &bias)], &path)
            .expect("writes");
        path
    }

    /// The assumption offload rests on: a recorded tensor shares its TensorImpl with the
    /// model's handle, so `set_data` on it changes what the model computes with.
    #[test]
    fn set_data_on_a_recorded_tensor_changes_the_models_own() {
        let _guard = tch::no_grad_guard();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = tiny_linear_file(dir.path());
        let weights = Weights::open(&[path], Device::Cpu, Kind::Float).expect("opens");
        let linear = Linear::new(&weights.root().pp("l"), 2, 3, true);
        weights.finish().expect("complete");
        let mut recorded = weights.recorded();
        assert_eq!(recorded.len(), 2);
        for t in &mut recorded {
            t.set_data(&t.to_kind(Kind::Double));
        }
        assert_eq!(linear.weight.kind(), Kind::Double);
        assert_eq!(linear.bias.as_ref().map(Tensor::kind), Some(Kind::Double));
        let x = Tensor::from_slice(&[1f64, 1.]).view([1, 2]);
        let y = Vec::<f64>::try_from(linear.forward(&x).view([-1])).expect("doubles");
        assert_eq!(y, vec![3.5, 6.5, 12.0]);
    }

    #[test]
    fn offload_parks_runs_and_logs_in_order() {
        let _guard = tch::no_grad_guard();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = tiny_linear_file(dir.path());
        let weights = Weights::open(&[path], Device::Cpu, Kind::Float)
            .expect("opens")
            .placed_on(Device::Cpu);
        let linear = Linear::new(&weights.root().pp("l"), 2, 3, true);
        let offload = Offload::new(Device::Cpu);
        offload.set_enabled(true).expect("on");
        offload
            .register(Component::Unet, weights.recorded(), true)
            .expect("registers");
        offload.park_as(Kind::Double).expect("parks");
        assert_eq!(
            linear.weight.kind(),
            Kind::Double,
            "parked in the host kind"
        );
        {
            let _on = offload
                .run(&[Component::Unet, Component::Vae])
                .expect("moves");
            assert_eq!(linear.weight.kind(), Kind::Float, "moved in to compute");
        }
        assert_eq!(linear.weight.kind(), Kind::Double, "moved back");
        let log: Vec<(Component, Place)> = offload
            .take_log()
            .iter()
            .map(|m| (m.component, m.to))
            .collect();
        // park_as re-parks (in, out), then the run (in, out); the unregistered VAE never moves.
        assert_eq!(
            log,
            [Place::Execution, Place::Host, Place::Execution, Place::Host]
                .map(|p| (Component::Unet, p))
        );
        assert_eq!(offload.bytes(Component::Unet), Some(9 * 4));
        offload.set_enabled(false).expect("off");
        assert_eq!(linear.weight.kind(), Kind::Float, "off: back on the device");
    }
}
