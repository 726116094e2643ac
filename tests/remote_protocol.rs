//! The remote protocol: every message survives a round trip through its JSON line; the worker
//! answers bad, unknown and out-of-order messages with errors and keeps serving; a version
//! mismatch is refused by either side with a message that says what to do; and the client
//! tells a failed ssh connection from easel missing on the host.
mod remote_support;

use easel::recipe::{RecipeLora, RecipePatch};
use easel::remote::protocol::{
    self, HostFiles, Line, Reply, Request, Session, Welcome, WirePicture,
};
use easel::remote::{RemoteError, RemoteWorker};
use easel::worker::{Job, Picture};
use remote_support::*;
use std::process::Command;

fn round_trip_request(r: Request) {
    let line = protocol::to_line(&r);
    assert!(
        line.ends_with('\n') && !line.trim_end().contains('\n'),
        "{line}"
    );
    assert_eq!(protocol::parse_request(&line).unwrap(), r, "{line}");
}

fn round_trip_reply(r: Reply) {
    let line = protocol::to_line(&r);
    assert!(
        line.ends_with('\n') && !line.trim_end().contains('\n'),
        "{line}"
    );
    assert_eq!(protocol::parse_reply(&line).unwrap(), r, "{line}");
}

#[test]
fn every_message_round_trips() {
    round_trip_request(Request::Hello {
        protocol: 1,
        easel: "0.1.0".into(),
        session: Session {
            keep: true,
            device: Some("cuda:1".into()),
            dtype: Some("bf16".into()),
            preview_every: 2,
            vae_tiling: true,
            low_memory: false,
            host_files: HostFiles {
                vae: Some("/data/vae".into()),
                model_config: None,
                embeddings: Some("embeddings".into()),
                fast_decoder: Some("taesd".into()),
                preview_decoder: Some("taesd".into()),
            },
        },
    });
    round_trip_request(Request::Submit {
        job: Job {
            id: u64::MAX,
            patch: RecipePatch {
                model: Some("sd15".into()),
                prompt: Some("a fox, \"quoted\"\nnext line ü".into()),
                seed: Some(u64::MAX - 1),
                cfg: Some(7.25),
                steps: Some(30),
                ..Default::default()
            },
            count: 3,
            loras: vec![RecipeLora {
                path: "ink.safetensors".into(),
                weight: -0.35,
            }],
            ..Default::default()
        },
        uploads: Default::default(),
    });
    round_trip_request(Request::Cancel { id: 9 });
    let pic = WirePicture {
        width: 3,
        height: 2,
        png: "iVBORw0KGgo=".into(),
    };
    for reply in [
        Reply::Welcome(Welcome {
            protocol: 1,
            easel: "0.1.0".into(),
            pid: 42,
            devices: vec!["cpu".into(), "cuda:0".into()],
            models_dir: Some("/models".into()),
            models: vec!["sd15".into(), "xl.safetensors".into()],
            kept_in: None,
        }),
        Reply::Loading { model: "m".into() },
        Reply::LoadStage {
            component: "unet".into(),
            progress: 0.123_456_7,
        },
        Reply::Loaded {
            model: "m".into(),
            device: "cuda:0".into(),
            dtype: "fp16".into(),
            seconds: 1.25,
            native: (512, 768),
        },
        Reply::Started { id: 1, seed: 7 },
        Reply::Progress {
            id: 1,
            image: 0,
            images: 2,
            step: 3,
            steps: 20,
            preview: Some(pic.clone()),
        },
        Reply::Progress {
            id: 1,
            image: 1,
            images: 2,
            step: 1,
            steps: 20,
            preview: None,
        },
        Reply::Image {
            id: 1,
            name: "a.png".into(),
            remote_path: "/tmp/x/a.png".into(),
            seconds: 2.5,
            png: "AAEC".into(),
        },
        Reply::Note {
            message: "hm".into(),
        },
        Reply::Done {
            id: 1,
            paths: vec!["/tmp/x/a.png".into()],
        },
        Reply::Failed {
            id: 2,
            message: "no".into(),
        },
        Reply::Cancelled {
            id: 3,
            paths: Vec::new(),
        },
        Reply::Error {
            id: None,
            message: "bad".into(),
        },
        Reply::Error {
            id: Some(4),
            message: "dup".into(),
        },
    ] {
        round_trip_reply(reply);
    }
}

#[test]
fn previews_are_small_pngs_of_the_same_picture() {
    let (w, h) = (300u32, 150u32);
    let rgb: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % 256) as u8, (i / 256 % 256) as u8, 9])
        .collect();
    let picture = Picture {
        width: w,
        height: h,
        rgb,
    };
    let wire = protocol::encode_preview(&picture).unwrap();
    assert_eq!((wire.width, wire.height), (128, 64));
    let back = protocol::decode_preview(&wire).unwrap();
    assert_eq!(
        (back.width, back.height, back.rgb.len()),
        (128, 64, 128 * 64 * 3)
    );
    // The blue channel is 9 everywhere; a resize keeps a constant channel constant.
    assert!(back.rgb.chunks(3).all(|p| p[2] == 9));
    // Small pictures travel as they are, pixel for pixel.
    let small = Picture {
        width: 5,
        height: 4,
        rgb: (0..60).map(|i| (i * 4) as u8).collect(),
    };
    let wire = protocol::encode_preview(&small).unwrap();
    assert_eq!(protocol::decode_preview(&wire).unwrap(), small);
    let bad = Picture {
        width: 5,
        height: 4,
        rgb: vec![0; 7],
    };
    assert!(protocol::encode_preview(&bad).is_err());
}

#[test]
fn lines_are_read_with_a_limit() {
    let text = format!("short\n{}\nafter\r\nlast", "x".repeat(100));
    let mut input = std::io::BufReader::with_capacity(7, text.as_bytes());
    let mut lines = Vec::new();
    while let Some(line) = protocol::read_line(&mut input, 50).unwrap() {
        lines.push(line);
    }
    assert_eq!(
        lines,
        vec![
            Line::Text("short".into()),
            Line::Bad("a line longer than 50 bytes was skipped".into()),
            Line::Text("after".into()),
            Line::Text("last".into()),
        ]
    );
}

#[test]
fn bad_messages_get_error_replies_and_the_worker_serves_on() {
    let home = tempfile::tempdir().unwrap();
    let mut pipe = Pipe::start(&[], home.path());
    let job = Request::Submit {
        job: Job {
            id: 5,
            patch: fox_patch(1),
            count: 1,
            loras: Vec::new(),
            ..Default::default()
        },
        uploads: Default::default(),
    };
    // Before the hello, a job is refused with its id.
    pipe.send(&job);
    match pipe.recv(30) {
        Reply::Error { id, message } => {
            assert_eq!(id, Some(5));
            assert!(message.contains("hello first"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    for (bad, want) in [
        ("not json", "cannot read the request \"not json\""),
        (
            r#"{"type":"frobnicate","id":1}"#,
            "unknown variant `frobnicate`",
        ),
        (r#"{"type":"submit"}"#, "missing field `job`"),
        (
            r#"{"type":"submit","job":{"id":1,"patch":{"colour":1},"count":1}}"#,
            "unknown field `colour`",
        ),
        ("[1,2,3]", "cannot read the request"),
    ] {
        pipe.send_raw(bad);
        match pipe.recv(30) {
            Reply::Error { id: None, message } => {
                assert!(message.contains(want), "{bad}: {message}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // A line longer than the limit is skipped whole, with an error.
    pipe.send_raw(&"y".repeat(protocol::MAX_REQUEST_BYTES + 10));
    match pipe.recv(30) {
        Reply::Error { id: None, message } => assert!(message.contains("longer than"), "{message}"),
        other => panic!("{other:?}"),
    }
    pipe.send(&hello(0));
    match pipe.recv(30) {
        Reply::Welcome(w) => {
            assert_eq!(w.protocol, protocol::PROTOCOL_VERSION);
            assert_eq!(w.easel, env!("CARGO_PKG_VERSION"));
            assert_eq!(w.pid, pipe.child.id());
            assert_eq!(w.devices.first().map(String::as_str), Some("cpu"));
        }
        other => panic!("{other:?}"),
    }
    pipe.send(&hello(0));
    assert!(
        matches!(pipe.recv(30), Reply::Error { id: None, ref message } if message.contains("already")),
        "a second hello is refused"
    );
    // A job naming a model that does not exist fails with the loader's reason.
    pipe.send(&Request::Submit {
        job: Job {
            id: 6,
            patch: RecipePatch {
                model: Some("/nonexistent/model".into()),
                prompt: Some("x".into()),
                ..Default::default()
            },
            count: 1,
            loras: Vec::new(),
            ..Default::default()
        },
        uploads: Default::default(),
    });
    let replies = pipe.until(60, |r| matches!(r, Reply::Failed { .. }));
    match replies.last() {
        Some(Reply::Failed { id: 6, message }) => {
            assert!(message.contains("/nonexistent/model"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    pipe.hang_up();
    assert_eq!(pipe.exit_within(20), Some(0), "the worker ends on EOF");
}

#[test]
fn the_worker_refuses_another_protocol_version_and_ends() {
    let home = tempfile::tempdir().unwrap();
    let mut pipe = Pipe::start(&[], home.path());
    pipe.send(&Request::Hello {
        protocol: 999,
        easel: "9.9.9".into(),
        session: Session::default(),
    });
    match pipe.recv(30) {
        Reply::Error { id: None, message } => {
            assert!(message.contains("protocol version mismatch"), "{message}");
            assert!(
                message.contains("999") && message.contains("9.9.9"),
                "{message}"
            );
            assert!(message.contains("same easel version"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pipe.exit_within(20),
        Some(0),
        "the worker ends after refusing"
    );
}

fn options(out: &std::path::Path) -> easel::remote::RemoteOptions {
    remote_options("gpu-box", "ssh", out, None)
}

/// A transport that answers the hello with `reply`, as another easel would.
fn canned(reply: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("read hello; echo '{reply}'; sleep 1")]);
    cmd
}

#[test]
fn the_client_refuses_another_protocol_version() {
    let out = tempfile::tempdir().unwrap();
    let welcome = r#"{"type":"welcome","protocol":999,"easel":"9.9.9","pid":1,"devices":["cpu"],"models_dir":null,"models":[],"kept_in":null}"#;
    let err = RemoteWorker::connect_with(canned(welcome), &options(out.path()))
        .err()
        .expect("refused");
    assert!(
        matches!(err, RemoteError::Version { theirs: 999, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("protocol version mismatch")
            && text.contains("gpu-box")
            && text.contains("9.9.9")
            && text.contains("same easel version"),
        "{text}"
    );
    // The host's own refusal is passed on.
    let refusal = r#"{"type":"error","id":null,"message":"protocol version mismatch: x"}"#;
    let err = RemoteWorker::connect_with(canned(refusal), &options(out.path()))
        .err()
        .expect("refused");
    assert!(matches!(err, RemoteError::Refused { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("gpu-box refused the connection: protocol version mismatch"));
}

#[test]
fn the_client_tells_why_a_connection_failed() {
    let out = tempfile::tempdir().unwrap();
    // easel missing on the host: its shell says so and exits 127.
    let fake = fake_ssh(out.path());
    let mut opts = options(out.path());
    opts.ssh = Some(fake.display().to_string());
    opts.easel = "/nonexistent/bin/easel".into();
    let err = RemoteWorker::connect(&opts).err().expect("fails");
    assert!(matches!(err, RemoteError::NotInstalled { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("easel is not installed on gpu-box") && text.contains("--remote-easel"),
        "{text}"
    );
    // Something that is not an easel worker.
    let err = RemoteWorker::connect_with(canned("Welcome to gpu-box!"), &opts)
        .err()
        .expect("fails");
    assert!(matches!(err, RemoteError::NotAWorker { .. }), "{err:?}");
    // No ssh server where ssh is sent: ssh's own message, and what to check.
    if Command::new("ssh").arg("-V").output().is_ok() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut opts = options(out.path());
        opts.host = "nobody@127.0.0.1".into();
        opts.ssh = Some(format!(
            "ssh -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        ));
        let err = RemoteWorker::connect(&opts).err().expect("fails");
        assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("cannot connect to nobody@127.0.0.1 over ssh")
                && text.contains("Connection refused"),
            "{text}"
        );
    }
    // No ssh at all.
    let mut opts = options(out.path());
    opts.ssh = Some("/nonexistent/ssh -v".into());
    let err = RemoteWorker::connect(&opts).err().expect("fails");
    assert!(matches!(err, RemoteError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("EASEL_SSH"), "{err}");
    let mut opts = options(out.path());
    opts.host = "-oProxyCommand=evil".into();
    assert!(matches!(
        RemoteWorker::connect(&opts).err(),
        Some(RemoteError::BadHost(_))
    ));
}
