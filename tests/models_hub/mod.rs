//! A small Hugging Face hub on 127.0.0.1 for the `easel models` tests: it serves fixture model
//! folders in the hub's URL layout (`/{owner}/{name}/resolve/{revision}/{path}`) with the
//! headers hf-hub reads (x-repo-commit, etag, x-linked-etag, x-linked-size, content-length,
//! content-range), redirects LFS files (safetensors) to a CDN path as the hub does, answers
//! Range requests, and can misbehave once on purpose: drop a connection, stall, or send a
//! damaged byte.
#![allow(dead_code)]
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub range: Option<String>,
}

/// Misbehaviour for the next transfer of a file's content (not the 1-byte metadata probes).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Announce the full length, send `after` bytes, close the connection.
    Drop { after: usize },
    /// Send `after` bytes, then hold the connection open until the server stops.
    Stall { after: usize },
    /// Send the content with one byte changed.
    Corrupt,
}

#[derive(Debug, Clone)]
struct File {
    bytes: Arc<Vec<u8>>,
    sha256: String,
    git_sha1: String,
    lfs: bool,
}

#[derive(Default)]
struct State {
    /// repo id -> (commit, path -> file)
    repos: HashMap<String, (String, HashMap<String, File>)>,
    /// CDN path (the sha256) -> file
    cdn: HashMap<String, File>,
    /// path -> (fault, how many more transfers it spoils)
    faults: HashMap<String, (Fault, usize)>,
    log: Vec<Request>,
}

pub struct Hub {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Hub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, st) = (s.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &st, port);
                });
            }
        });
        Self { port, state, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves every file below `dir` as repository `repo`; returns its commit hash.
    pub fn add_repo(&self, repo: &str, dir: &Path) -> String {
        let commit = hex(&Sha1::digest(repo.as_bytes()));
        let mut files = HashMap::new();
        for path in walk(dir) {
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = std::fs::read(&path).unwrap();
            let file = File {
                sha256: hex(&Sha256::digest(&bytes)),
                git_sha1: git_sha1(&bytes),
                lfs: rel.ends_with(".safetensors"),
                bytes: Arc::new(bytes),
            };
            files.insert(rel, file);
        }
        let mut st = self.state.lock().unwrap();
        for f in files.values() {
            st.cdn.insert(f.sha256.clone(), f.clone());
        }
        st.repos.insert(repo.to_string(), (commit.clone(), files));
        commit
    }

    /// Spoils the next transfer of `file`.
    pub fn fault(&self, file: &str, fault: Fault) {
        self.fault_times(file, fault, 1);
    }

    pub fn fault_times(&self, file: &str, fault: Fault, times: usize) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(file.to_string(), (fault, times));
    }

    pub fn log(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// Content transfers (not 1-byte probes) whose target ends with `suffix` (a CDN sha or a
    /// resolve path).
    pub fn transfers(&self, suffix: &str) -> Vec<Request> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "GET" && r.target.ends_with(suffix))
            .filter(|r| r.range.as_deref() != Some("bytes=0-0"))
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn git_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn serve(
    conn: TcpStream,
    state: &Mutex<State>,
    stop: &AtomicBool,
    port: u16,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    state.lock().unwrap().log.push(Request {
        method: method.clone(),
        target: target.clone(),
        range: range.clone(),
    });
    let mut out = conn;
    let path = target.split('?').next().unwrap_or_default();

    if let Some(sha) = path.strip_prefix("/cdn/") {
        let file = state.lock().unwrap().cdn.get(sha).cloned();
        return match file {
            Some(f) => content(
                &mut out,
                &f,
                sha,
                &[],
                range.as_deref(),
                &method,
                state,
                stop,
            ),
            None => status(&mut out, "404 Not Found", &[]),
        };
    }
    // /{owner}/{name}/resolve/{revision}/{path}
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        return status(&mut out, "404 Not Found", &[]);
    }
    let repo = format!("{}/{}", segs[0], segs[1]);
    let (rev, file_path) = (segs[3], segs[4]);
    let found = {
        let st = state.lock().unwrap();
        st.repos.get(&repo).map(|(commit, files)| {
            (
                commit.clone(),
                (rev == commit || rev == "main")
                    .then(|| files.get(file_path).cloned())
                    .flatten(),
            )
        })
    };
    let Some((commit, file)) = found else {
        return status(&mut out, "401 Unauthorized", &[]);
    };
    let Some(file) = file else {
        return status(
            &mut out,
            "404 Not Found",
            &[("X-Error-Code".into(), "EntryNotFound".into())],
        );
    };
    if file.lfs {
        let headers = vec![
            ("X-Repo-Commit".to_string(), commit),
            ("X-Linked-Etag".into(), format!("\"{}\"", file.sha256)),
            ("X-Linked-Size".into(), file.bytes.len().to_string()),
            ("ETag".into(), format!("\"{}\"", file.sha256)),
            (
                "Location".into(),
                format!("http://127.0.0.1:{port}/cdn/{}", file.sha256),
            ),
        ];
        return status(&mut out, "302 Found", &headers);
    }
    let headers = vec![
        ("X-Repo-Commit".to_string(), commit),
        ("ETag".into(), format!("\"{}\"", file.git_sha1)),
    ];
    content(
        &mut out,
        &file,
        file_path,
        &headers,
        range.as_deref(),
        &method,
        state,
        stop,
    )
}

fn status(out: &mut TcpStream, status: &str, headers: &[(String, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.flush()
}

#[allow(clippy::too_many_arguments)]
fn content(
    out: &mut TcpStream,
    file: &File,
    key: &str,
    extra: &[(String, String)],
    range: Option<&str>,
    method: &str,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let len = file.bytes.len();
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().unwrap_or(len.saturating_sub(1));
            (a, b.min(len.saturating_sub(1)))
        }
        None => (0, len.saturating_sub(1)),
    };
    if start >= len && len > 0 {
        return status(
            out,
            "416 Range Not Satisfiable",
            &[("Content-Range".into(), format!("bytes */{len}"))],
        );
    }
    let body = &file.bytes[start..=end];
    let probe = range == Some("bytes=0-0");
    // Faults are keyed by the repository path; CDN requests name the sha256.
    let fault = if probe || method != "GET" {
        None
    } else {
        let mut st = state.lock().unwrap();
        let name = if st.faults.contains_key(key) {
            Some(key.to_string())
        } else {
            st.repos.values().find_map(|(_, files)| {
                files
                    .iter()
                    .find(|(_, f)| f.sha256 == key)
                    .map(|(p, _)| p.clone())
                    .filter(|p| st.faults.contains_key(p))
            })
        };
        name.and_then(|n| {
            let (fault, left) = st.faults.remove(&n)?;
            if left > 1 {
                st.faults.insert(n, (fault.clone(), left - 1));
            }
            Some(fault)
        })
    };
    let code = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let mut head = format!(
        "HTTP/1.1 {code}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        body.len()
    );
    if range.is_some() {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return out.flush();
    }
    match fault {
        None => out.write_all(body)?,
        Some(Fault::Corrupt) => {
            let mut bad = body.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 0xff;
            out.write_all(&bad)?;
        }
        Some(Fault::Drop { after }) => {
            out.write_all(&body[..after.min(body.len())])?;
            out.flush()?;
            return out.shutdown(Shutdown::Both);
        }
        Some(Fault::Stall { after }) => {
            out.write_all(&body[..after.min(body.len())])?;
            out.flush()?;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return out.shutdown(Shutdown::Both);
        }
    }
    out.flush()
}
