//! Driving the real binary in tmux as a person would: send keys, read the screen. Shared by the
//! studio tests (tui_e2e, models_studio, remote_ssh).
#![allow(dead_code)]
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    pub session: String,
}

impl Tmux {
    /// A detached session `easel-NAME-PID` of `width` x `height` running `script` with `sh -c`.
    pub fn start(name: &str, (width, height): (u16, u16), script: &str) -> Self {
        let tmux = Tmux {
            session: format!("easel-{name}-{}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let started = Command::new("tmux")
            .args(["new-session", "-d", "-s", &tmux.session, "-x", &w, "-y", &h])
            .args(["sh", "-c", script])
            .status()
            .expect("tmux runs");
        assert!(started.success(), "tmux could not start {name}");
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    pub fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", &self.session, "-l", text]);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    /// Polls the screen until `want` shows; panics after `secs` with the last screen.
    pub fn wait_for(&self, want: &str, secs: u64) -> String {
        self.wait_seen(want, secs, &mut Vec::new())
    }

    /// `wait_for`, recording every screen seen on the way (to check what showed meanwhile).
    pub fn wait_seen(&self, want: &str, secs: u64, seen: &mut Vec<String>) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(want) {
                return s;
            }
            seen.push(s.clone());
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("\"{want}\" did not appear in {secs} s; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // A studio still running when a test fails must not outlive the test run.
        if let Ok(out) = Command::new("tmux")
            .args(["list-panes", "-t", &self.session, "-F", "#{pane_pid}"])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("pkill").args(["-9", "-P", pid]).output();
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .output();
    }
}

pub fn tmux_present() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}
