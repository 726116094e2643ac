//! scripts/slurm/easel-array.sbatch on a real single-node Slurm: the test writes a slurm.conf for
//! this host, starts munged, slurmctld and slurmd itself (all files in a scratch folder), submits
//! the plan as a 3-task job array, waits, checks the output folder is complete and equal to an
//! unsharded run, and stops the daemons. Where Debian's slurm-wlm and munge are not installed
//! it says "skipped: ..." and passes (scripts/test installs them when run as root).
mod batch_support;

use batch_support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"];

fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The daemons this test started; stopped (and reaped) however the test ends.
struct Daemons {
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Daemons {
    fn spawn(&mut self, name: &str, cmd: &mut Command) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.out"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Every daemon log, for a failure message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for name in [
            "munged.log",
            "slurmctld.log",
            "slurmd.log",
            "munged.out",
            "slurmctld.out",
            "slurmd.out",
        ] {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        // slurmd before slurmctld before munged: each needs the next one to shut down cleanly.
        for (_, child) in self.children.iter_mut().rev() {
            // SAFETY: signalling a child this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn host_name() -> String {
    let out = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn slurm_conf(dir: &Path, host: &str, user: &str) -> String {
    let d = dir.display();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "ClusterName=easeltest\n\
         SlurmctldHost={host}(127.0.0.1)\n\
         SlurmctldPort={}\n\
         SlurmdPort={}\n\
         SlurmUser={user}\n\
         SlurmdUser={user}\n\
         AuthType=auth/munge\n\
         AuthInfo=socket={d}/munge.sock\n\
         CredType=cred/munge\n\
         StateSaveLocation={d}/state\n\
         SlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/slurmctld.log\n\
         SlurmdLogFile={d}/slurmd.log\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         SchedulerType=sched/backfill\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core\n\
         MpiDefault=none\n\
         ReturnToService=2\n\
         MailProg=/bin/true\n\
         NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
         PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
        free_port(),
        free_port()
    )
}

fn wait_for(what: &str, daemons: &Daemons, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}:\n{}",
            daemons.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_slurm_job_array_renders_the_plan_in_shards() {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| find(t).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not installed (apt-get install --no-install-recommends slurm-wlm munge)",
            missing.join(", ")
        );
        return;
    }
    let tool = |t: &str| find(t).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("slurm");
    for sub in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let key: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(dir.join("munge.key"), key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("munge.key"),
        std::fs::Permissions::from_mode(0o400),
    )
    .unwrap();
    let conf = dir.join("slurm.conf");
    std::fs::write(&conf, slurm_conf(&dir, &host_name(), &user_name())).unwrap();

    let mut daemons = Daemons {
        children: Vec::new(),
        dir: dir.clone(),
    };
    daemons.spawn(
        "munged",
        Command::new(tool("munged"))
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", dir.join("munge.sock").display()))
            .arg(format!("--key-file={}", dir.join("munge.key").display()))
            .arg(format!("--pid-file={}", dir.join("munged.pid").display()))
            .arg(format!("--log-file={}", dir.join("munged.log").display()))
            .arg(format!("--seed-file={}", dir.join("munged.seed").display())),
    );
    wait_for("munged's socket", &daemons, Duration::from_secs(15), || {
        dir.join("munge.sock").exists()
    });
    let slurm = |cmd: &Path| {
        let mut c = Command::new(cmd);
        c.env("SLURM_CONF", &conf);
        c
    };
    daemons.spawn(
        "slurmctld",
        slurm(&tool("slurmctld")).arg("-D").arg("-f").arg(&conf),
    );
    daemons.spawn(
        "slurmd",
        slurm(&tool("slurmd"))
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .args(["-N", &host_name()]),
    );
    wait_for(
        "an idle Slurm node",
        &daemons,
        Duration::from_secs(45),
        || {
            slurm(&tool("sinfo"))
                .args(["-h", "-o", "%T"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        },
    );

    let home = root.path().join("home");
    let plan = write_plan(
        root.path(),
        &format!(
            "out = \"{{job}}/{{seed}}.png\"\n[defaults]\nmodel = \"{}\"\nsteps = 1\nwidth = 32\nheight = 32\n[[jobs]]\nprompt = \"a lighthouse\"\nseeds = \"0..4\"\n[[jobs]]\nprompt = \"a fox\"\nseeds = [5, 6]\n",
            tiny()
        ),
    );
    let out = root.path().join("out");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/easel-array.sbatch");
    let submit = slurm(&tool("sbatch"))
        .args(["--parsable", "--array=0-2"])
        .arg(format!("--output={}/task-%A_%a.out", dir.display()))
        .arg(format!("--chdir={}", root.path().display()))
        .arg(&script)
        .arg(&plan)
        .arg(&out)
        .env("EASEL", env!("CARGO_BIN_EXE_easel"))
        .env("EASEL_HOME", &home)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        submit.status.success(),
        "sbatch: {}\n{}",
        text(&submit.stderr),
        daemons.logs()
    );
    let job = text(&submit.stdout).trim().to_string();
    wait_for(
        "the job array to finish",
        &daemons,
        Duration::from_secs(180),
        || {
            slurm(&tool("squeue"))
                .args(["-h", "-j", &job])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
        },
    );
    let task_logs = || {
        let mut all = String::new();
        for k in 0..3 {
            let path = dir.join(format!("task-{job}_{k}.out"));
            all.push_str(&format!(
                "--- task {k}\n{}",
                std::fs::read_to_string(path).unwrap_or_default()
            ));
        }
        all
    };
    let status = batch_status(&home, &plan, &out);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}\n{}\n{}",
        text(&status.stdout),
        task_logs(),
        daemons.logs()
    );
    let shards: std::collections::BTreeSet<String> = manifest(&out)
        .iter()
        .map(|r| r["shard"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(shards.iter().all(|s| s.ends_with("/3")), "{shards:?}");
    assert!(task_logs().contains("(shard 1/3)"), "{}", task_logs());

    let single = root.path().join("single");
    let run = output(
        easel(&home)
            .arg("batch")
            .arg(&plan)
            .arg("--out")
            .arg(&single),
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(pngs(&out), pngs(&single));
    assert_eq!(pngs(&out).len(), 6);
    drop(daemons);
}
