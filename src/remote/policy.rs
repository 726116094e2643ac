//! What a remote client may name on the host. The client is a person with an ssh login there,
//! so reading models, LoRAs, VAEs, embeddings, decoders and model configs by name or by path is
//! the point of a remote worker (the session's host files are checked in server.rs); but a job
//! never chooses where files are written (the worker names its PNGs in its own folder) and
//! never makes the worker read files that are not weights: init images and masks come with the
//! job (their pixels would come back in the render, so they are never read from the host's
//! disk), no LoRA files other than .safetensors, and no `<lora:NAME>` tag that climbs out of
//! the host's loras folder.
use super::protocol::{Upload, Uploads};
use crate::worker::Job;
use std::path::{Component, Path};

/// Refuses a job that names a file the worker must not touch; the message says what to do.
pub fn check_job(job: &Job, uploads: &Uploads) -> Result<(), String> {
    let patch = &job.patch;
    for (what, named, sent) in [
        ("init image", &patch.init_image, &uploads.init_image),
        ("mask", &patch.mask, &uploads.mask),
    ] {
        match (named, sent) {
            (Some(name), Some(Upload { name: sent, .. })) if name == sent => {}
            (None, None) => {}
            (Some(name), _) => {
                return Err(format!(
                    "a remote worker reads no {what} from its own disk: the file must come with \
                     the job ({name:?} did not; easel generate --remote and the studio send it)"
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "the job sends a {what} but its recipe names none: set init_image/mask to \
                     the uploaded file's name"
                ))
            }
        }
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

    fn check_job_t(job: &Job) -> Result<(), String> {
        check_job(job, &Uploads::default())
    }

    fn job(patch: RecipePatch, loras: Vec<RecipeLora>) -> Job {
        Job {
            id: 1,
            patch,
            count: 1,
            loras,
            ..Default::default()
        }
    }

    #[test]
    fn files_a_client_may_and_may_not_name() {
        let prompt = |p: &str| RecipePatch {
            prompt: Some(p.into()),
            ..RecipePatch::default()
        };
        assert!(check_job_t(&job(prompt("a fox <lora:styles/ink:0.5>"), vec![])).is_ok());
        for bad in [
            "<lora:../../../home/me/x:1>",
            "<lora:/etc/x>",
            "<lora:a/../../b>",
            "<lora:..\\x>",
        ] {
            let err = check_job_t(&job(prompt(bad), vec![])).unwrap_err();
            assert!(
                err.contains("outside the host's loras folder"),
                "{bad}: {err}"
            );
        }
        let init = RecipePatch {
            init_image: Some("/etc/passwd".into()),
            ..RecipePatch::default()
        };
        assert!(check_job_t(&job(init.clone(), vec![]))
            .unwrap_err()
            .contains("init image"));
        // Sent with the job under the name the recipe gives: allowed; under another: refused.
        let sent = |name: &str| Uploads {
            init_image: Some(Upload {
                name: name.into(),
                bytes: String::new(),
            }),
            mask: None,
        };
        assert!(check_job(&job(init.clone(), vec![]), &sent("/etc/passwd")).is_ok());
        assert!(check_job(&job(init, vec![]), &sent("other.png")).is_err());
        assert!(check_job(&job(prompt("x"), vec![]), &sent("a.png")).is_err());
        let lora = |path: &str| RecipeLora {
            path: path.into(),
            weight: 1.0,
        };
        assert!(check_job_t(&job(prompt("x"), vec![lora("/m/a.safetensors")])).is_ok());
        assert!(check_job_t(&job(prompt("x"), vec![lora("/etc/passwd")])).is_err());
    }
}
