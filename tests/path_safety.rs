//! "Never executed", through the real binary: pickles are refused unopened, plans and remote
//! jobs cannot write outside the output folder (nor make a remote worker read what is not a
//! model), and prompts and host names reach `ssh` as arguments, never through a shell.
mod batch_support;
mod remote_support;

use batch_support::*;
use easel::remote::protocol::{self, Reply, Request, Session};
use remote_support::Pipe;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every path under `dir`, recursively, sorted.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(listing(&p));
            }
            out.insert(p);
        }
    }
    out
}

/// What appeared under `root` outside the folders allowed to change.
fn stray(root: &Path, before: &BTreeSet<PathBuf>, allowed: &[&Path]) -> Vec<PathBuf> {
    listing(root)
        .into_iter()
        .filter(|p| !before.contains(p) && !allowed.iter().any(|a| p.starts_with(a)))
        .collect()
}

/// A protocol-0 pickle that runs `touch MARK` when unpickled: if easel ever unpickled it, the
/// mark would appear.
fn booby_trapped_pickle(path: &Path, mark: &Path) {
    let payload = format!("cos\nsystem\n(S'touch {}'\ntR.", mark.display());
    std::fs::write(path, payload).unwrap();
}

#[test]
fn pickle_checkpoints_are_refused_unopened() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let mark = root.path().join("PWNED");
    let mut models: Vec<PathBuf> = ["ckpt", "pt", "bin", "pth"]
        .iter()
        .map(|ext| root.path().join(format!("model.{ext}")))
        .collect();
    for m in &models {
        booby_trapped_pickle(m, &mark);
    }
    // A diffusers folder whose UNet has only pickle weights.
    let folder = root.path().join("pickled-folder");
    copy_tree(&PathBuf::from(tiny()), &folder);
    std::fs::remove_file(folder.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    booby_trapped_pickle(&folder.join("unet/diffusion_pytorch_model.bin"), &mark);
    models.push(folder);

    for model in &models {
        let run = output(
            easel(&home)
                .args([
                    "generate", "a fox", "--steps", "1", "--width", "32", "--height", "32",
                ])
                .arg("--model")
                .arg(model)
                .arg("--out")
                .arg(out.join("x.png")),
        );
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "{}: {stderr}", model.display());
        assert!(
            stderr.contains("never") && stderr.contains("pickle") && stderr.contains("safetensors"),
            "{}: the message says pickles are never opened and to convert:\n{stderr}",
            model.display()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // LoRA and VAE files that are pickles are refused the same way.
    let pickle = root.path().join("model.pt");
    for extra in [
        vec!["--lora".to_string(), format!("{}:0.5", pickle.display())],
        vec!["--vae".to_string(), pickle.display().to_string()],
    ] {
        let run = output(
            easel(&home)
                .args([
                    "generate", "a fox", "--steps", "1", "--width", "32", "--height", "32",
                ])
                .args(["--model", &tiny()])
                .args(&extra)
                .arg("--out")
                .arg(out.join("x.png")),
        );
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("never") && stderr.contains("pickle"),
            "{extra:?}: {stderr}"
        );
    }
    assert!(!mark.exists(), "no pickle ran");
    assert!(listing(&out).is_empty(), "nothing was written");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn plan(out: Option<&str>, job: &str) -> String {
    let out = out.map(|o| format!("out = {o:?}\n")).unwrap_or_default();
    format!(
        "{out}[defaults]\nmodel = {:?}\nsteps = 1\nwidth = 32\nheight = 32\n\n[[jobs]]\n{job}\nseeds = [1]\n",
        tiny()
    )
}

#[test]
fn plan_templates_and_recipe_values_stay_inside_the_output_folder() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plans = root.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let before = listing(root.path());

    // Templates whose own text leaves --out are refused before anything runs.
    for (template, why) in [
        (
            "../escape/{seed}.png",
            "climbs out of the output folder with ..",
        ),
        (
            "a/../../escape-{seed}.png",
            "climbs out of the output folder with ..",
        ),
        ("/tmp/easel-escape/{seed}.png", "is absolute"),
        ("..\\escape\\{seed}.png", "uses \\"),
    ] {
        let path = write_plan(&plans, &plan(Some(template), "prompt = \"x\""));
        let run = output(easel(&home).arg("batch").arg(&path).arg("--out").arg(&out));
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "{template}: {stderr}");
        assert!(stderr.contains(why), "{template}: {stderr}");
        assert!(
            stderr.contains("plan.toml:1"),
            "the line is named: {stderr}"
        );
    }
    // A preset name is a name, not a path.
    let path = write_plan(&plans, &plan(None, "prompt = \"x\"\npreset = \"../../x\""));
    let run = output(easel(&home).arg("batch").arg(&path).arg("--out").arg(&out));
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("cannot contain / or \\"), "{stderr}");
    assert_eq!(
        stray(root.path(), &before, &[&plans, &home]),
        Vec::<PathBuf>::new(),
        "refused plans write nothing"
    );

    // Hostile values in every placeholder become file-name-safe text inside --out.
    let job = "name = \"../../escape\"\nprompt = \"../../etc/x /tmp/y\"";
    let path = write_plan(
        &plans,
        &plan(Some("{job}/{prompt}/{model}/{preset}-{seed}.png"), job),
    );
    let run = output(easel(&home).arg("batch").arg(&path).arg("--out").arg(&out));
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let written: Vec<String> = pngs(&out).into_keys().collect();
    assert_eq!(
        written,
        vec!["_.._escape/_.._etc_x-_tmp_y/tiny-sd1/none-1.png".to_string()]
    );
    assert_eq!(
        stray(root.path(), &before, &[&plans, &home, &out]),
        Vec::<PathBuf>::new(),
        "nothing outside --out"
    );
}

/// `easel worker --stdio --out KEEP` with its scratch folder (TMPDIR) inside `root`.
fn start_worker(root: &Path, keep: &Path) -> Pipe {
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.args(["worker", "--stdio", "--out"])
        .arg(keep)
        .env("EASEL_HOME", root.join("home"))
        .env("TMPDIR", &tmp)
        .env("OMP_NUM_THREADS", "1")
        .current_dir(root)
        .stderr(Stdio::null());
    Pipe::spawn(cmd)
}

#[test]
fn a_remote_client_cannot_write_outside_the_workers_folder_or_read_non_models() {
    let root = tempfile::tempdir().unwrap();
    let keep = root.path().join("kept");
    let mark = root.path().join("PWNED");
    let secret = root.path().join("secret.png");
    std::fs::write(&secret, b"not for the client").unwrap();
    let before = listing(root.path());
    let mut worker = start_worker(root.path(), &keep);
    worker.send(&Request::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        easel: "test".into(),
        session: Session {
            keep: true,
            device: Some("cpu".into()),
            ..Session::default()
        },
    });
    assert!(matches!(worker.recv(120), Reply::Welcome(_)));

    let model = tiny();
    let hostile = [
        (
            1,
            serde_json::json!({"model": model, "prompt": "x", "init_image": secret}),
            "reads no init image",
        ),
        (
            2,
            serde_json::json!({"model": model, "prompt": "x", "init_image": "in.png", "mask": "../../../etc/mask.png"}),
            "reads no init image",
        ),
        (
            3,
            serde_json::json!({"model": model, "prompt": "a fox <lora:../../../../tmp/evil:1>"}),
            "outside the host's loras folder",
        ),
        (
            4,
            serde_json::json!({"model": model, "prompt": "a fox", "negative_prompt": "<lora:/etc/evil>"}),
            "outside the host's loras folder",
        ),
        (
            5,
            serde_json::json!({"model": "../../../../no/such/escape", "prompt": "x"}),
            "cannot load the model",
        ),
    ];
    for (id, patch, _) in &hostile {
        let mut request =
            serde_json::json!({"type": "submit", "job": {"id": id, "patch": patch, "count": 1}});
        if *id == 1 {
            request["job"]["loras"] = serde_json::json!([{"path": secret, "weight": 1.0}]);
        }
        worker.send_raw(&request.to_string());
    }
    worker.send_raw(
        &serde_json::json!({"type": "submit", "job": {"id": 6, "patch": {"model": model},
            "count": 1, "loras": [{"path": secret, "weight": 1.0}]}})
        .to_string(),
    );
    worker.send_raw("{\"type\": \"submit\", \"job\": {\"id\": \"../x\"}}");
    // A prompt that is a path and a shell command: only text in the recipe.
    let prompt = format!(
        "../../../etc/passwd $(touch {}) ; `touch {}`",
        mark.display(),
        mark.display()
    );
    worker.send_raw(
        &serde_json::json!({"type": "submit", "job": {"id": 7, "count": 1, "patch": {
            "model": model, "prompt": prompt, "steps": 1, "width": 32, "height": 32, "seed": 3}}})
        .to_string(),
    );
    let mut failed = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    let mut image = None;
    while failed.len() < 6 || image.is_none() || errors.is_empty() {
        match worker.recv(120) {
            Reply::Failed { id, message } => {
                failed.insert(id, message);
            }
            Reply::Error { message, .. } => errors.push(message),
            Reply::Image {
                id: 7,
                name,
                remote_path,
                ..
            } => image = Some((name, remote_path)),
            _ => {}
        }
    }
    worker.hang_up();
    assert!(
        worker.exit_within(30).is_some(),
        "the worker ends with its input"
    );
    for (id, _, why) in &hostile {
        assert!(failed[id].contains(why), "job {id}: {}", failed[id]);
    }
    assert!(
        failed[&6].contains("not a .safetensors file"),
        "{}",
        failed[&6]
    );
    assert!(errors[0].contains("cannot read the request"), "{errors:?}");
    let (name, remote_path) = image.unwrap();
    assert!(!name.contains('/') && name.ends_with(".png"), "{name}");
    assert_eq!(Path::new(&remote_path), keep.join(&name));
    assert!(!mark.exists(), "the prompt ran nothing");
    let home = root.path().join("home");
    let tmp = root.path().join("tmp");
    assert_eq!(
        stray(root.path(), &before, &[&keep, &home, &tmp]),
        Vec::<PathBuf>::new(),
        "nothing outside the worker's folders"
    );
    assert_eq!(pngs(&keep).len(), 1, "one kept image: {:?}", listing(&keep));
    assert!(pngs(&tmp).is_empty(), "scratch images are gone");
}

/// A stand-in for `ssh` on PATH: it writes its arguments, one per line, to `$ARGV_LOG`, then
/// does what sshd does with the remote command: runs it with `sh -c` (so a prompt that reached
/// the command line would run).
fn fake_ssh(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("ssh");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         for a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$ARGV_LOG\"; done\n\
         while [ $# -gt 0 ]; do case \"$1\" in --) shift; break;; -*) shift;; *) break;; esac; done\n\
         shift\n\
         exec sh -c \"$*\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn prompts_and_hosts_reach_ssh_as_arguments_never_through_a_shell() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let bin = root.path().join("bin");
    fake_ssh(&bin);
    let log = root.path().join("argv.log");
    let mark = root.path().join("PWNED");
    let m = mark.display();
    let prompt = format!("$(touch {m}) ; touch {m} | touch {m} & `touch {m}` \\ \" ' a fox");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let easel_bin = env!("CARGO_BIN_EXE_easel");
    let out = root.path().join("out/fox.png");
    let run = output(
        easel(&home)
            .args([
                "generate", &prompt, "--steps", "1", "--width", "32", "--height", "32",
            ])
            .args(["--seed", "3", "--device", "cpu", "--model", &tiny()])
            .args(["--remote", "me@gpu-host", "--remote-easel", easel_bin])
            .arg("--out")
            .arg(&out)
            .env("PATH", &path)
            .env("ARGV_LOG", &log)
            .env_remove("EASEL_SSH"),
    );
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let argv = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        argv.lines().collect::<Vec<_>>(),
        vec![
            "-T",
            "--",
            "me@gpu-host",
            &format!("'{easel_bin}' worker --stdio")
        ],
        "fixed words only: no prompt, no user text"
    );
    assert!(!mark.exists(), "the prompt ran nothing");
    let recipe = easel::output::png::read_recipe(&out).unwrap().unwrap();
    assert_eq!(
        recipe.prompt, prompt,
        "the prompt travelled in the protocol"
    );

    // A host that ssh would read as an option is refused before ssh starts.
    std::fs::remove_file(&log).unwrap();
    let proxy = format!("-oProxyCommand=touch {m}");
    let run = output(
        easel(&home)
            .args(["generate", "a fox", "--steps", "1", "--model", &tiny()])
            .arg(format!("--remote={proxy}"))
            .arg("--out")
            .arg(root.path().join("out2/x.png"))
            .env("PATH", &path)
            .env("ARGV_LOG", &log)
            .env_remove("EASEL_SSH"),
    );
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("is not a host name for ssh"), "{stderr}");
    assert!(!log.exists(), "ssh never ran");
    assert!(!mark.exists());
    assert!(!root.path().join("out2").exists());
}
