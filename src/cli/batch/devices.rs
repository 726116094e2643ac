//! `--devices`: one worker per entry. GPU numbers (`0,1`), `cuda:N`, `cpu` or `auto`, so the
//! same code runs two CPU workers (`cpu,cpu`) where there is no GPU.
use crate::engine::device::DeviceChoice;

/// Parses `0,1`, `cuda:0,cuda:1`, `cpu,cpu`, `auto`.
pub fn parse_devices(s: &str) -> Result<Vec<DeviceChoice>, String> {
    let devices = s
        .split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<usize>() {
                Ok(n) => Ok(DeviceChoice::Cuda(n)),
                Err(_) => part.parse::<DeviceChoice>().map_err(|_| {
                    format!(
                        "--devices: {part:?} is not a device: list GPU numbers (0,1), cuda:N, cpu or auto, separated by commas"
                    )
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if devices.len() > 64 {
        return Err("--devices lists more than 64 workers".into());
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_numbers_names_and_cpus() {
        assert_eq!(
            parse_devices("0, 1").unwrap(),
            vec![DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]
        );
        assert_eq!(
            parse_devices("cpu,cpu").unwrap(),
            vec![DeviceChoice::Cpu, DeviceChoice::Cpu]
        );
        assert_eq!(
            parse_devices("cuda:3,auto").unwrap(),
            vec![DeviceChoice::Cuda(3), DeviceChoice::Auto]
        );
        for bad in ["", "0,,1", "tpu", "-1"] {
            let err = parse_devices(bad).unwrap_err();
            assert!(err.contains("not a device"), "{bad}: {err}");
        }
    }
}
