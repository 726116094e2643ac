//! What a remote client may name on the host. The client is a person with an ssh login there,
//! so reading models and LoRAs by name or by path is the point of a remote worker; but a job
//! never chooses where files are written (the worker names its PNGs in its own folder) and
//! never makes the worker read files that are not weights: no init images or masks (whose
//! pixels would come back in the render), no LoRA files other than .safetensors, and no
//! `<lora:NAME>` tag that climbs out of the host's loras folder.
use crate::worker::Job;
use std::path::{Component, Path};

/// Refuses a job that names a file the worker must not touch; the message says what to do.
pub fn check_job(job: &Job) -> Result<(), String> {
    let patch = &job.patch;
    if patch.init_image.is_some() || patch.mask.is_some() {
        return Err(
            "a remote worker reads no init image or mask: run easel generate on the host itself \
             for img2img and inpainting"
                .into(),
        );
    }
    for lora in &job.loras {
        let is_safetensors = Path::new(&lora.path)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        if !is_safetensors {
            return Err(format!(
                "the LoRA {:?} is not a .safetensors file: a remote worker loads LoRAs only as \
                 .safetensors files",
                lora.path
            ));
        }
    }
    for prompt in [&patch.prompt, &patch.negative_prompt]
        .into_iter()
        .flatten()
    {
        for tag in crate::engine::lora::prompt_tags(prompt) {
            if !inside(&tag.name) {
                return Err(format!(
                    "<lora:{}> names a file outside the host's loras folder: use the LoRA's \
                     name there (subfolders allowed, no .. and no leading /)",
                    tag.name
                ));
            }
        }
    }
    Ok(())
}

/// A relative path that stays inside the folder it is joined to.
fn inside(name: &str) -> bool {
    !name.contains('\\')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{RecipeLora, RecipePatch};

    fn job(patch: RecipePatch, loras: Vec<RecipeLora>) -> Job {
        Job {
            id: 1,
            patch,
            count: 1,
            loras,
        }
    }

    #[test]
    fn files_a_client_may_and_may_not_name() {
        let prompt = |p: &str| RecipePatch {
            prompt: Some(p.into()),
            ..RecipePatch::default()
        };
        assert!(check_job(&job(prompt("a fox <lora:styles/ink:0.5>"), vec![])).is_ok());
        for bad in [
            "<lora:../../../home/me/x:1>",
            "<lora:/etc/x>",
            "<lora:a/../../b>",
            "<lora:..\\x>",
        ] {
            let err = check_job(&job(prompt(bad), vec![])).unwrap_err();
            assert!(
                err.contains("outside the host's loras folder"),
                "{bad}: {err}"
            );
        }
        let init = RecipePatch {
            init_image: Some("/etc/passwd".into()),
            ..RecipePatch::default()
        };
        assert!(check_job(&job(init, vec![]))
            .unwrap_err()
            .contains("init image"));
        let lora = |path: &str| RecipeLora {
            path: path.into(),
            weight: 1.0,
        };
        assert!(check_job(&job(prompt("x"), vec![lora("/m/a.safetensors")])).is_ok());
        assert!(check_job(&job(prompt("x"), vec![lora("/etc/passwd")])).is_err());
    }
}
