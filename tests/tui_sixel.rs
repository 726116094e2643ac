//! Pictures in a real sixel terminal: xterm as a VT340 under Xvfb renders the tiny model, in the
//! studio and with `easel generate --preview`, and a screenshot must hold the PNG written.
//! Needs xterm, Xvfb, xdotool and xwd (Debian: apt-get install xterm xvfb xdotool x11-apps);
//! skips, saying so, when any is missing. Run alone: `cargo test --test tui_sixel`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn xdotool(display: &str, args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An XWD screenshot (ZPixmap, 32 bits per pixel, as Xvfb's 24-bit screen gives) as RGB rows.
fn read_xwd(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    let field = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let (header, format, width, height) = (field(0), field(2), field(4), field(5));
    let (byte_order, bits_per_pixel, bytes_per_line, colors) =
        (field(7), field(11), field(12), field(19));
    assert_eq!(
        (format, bits_per_pixel),
        (2, 32),
        "a 32-bit ZPixmap screenshot"
    );
    let start = header + colors * 12;
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let p = &bytes[start + y * bytes_per_line + x * 4..][..4];
            // Pixel values are 0x00RRGGBB in the image's byte order.
            pixels.push(if byte_order == 0 {
                [p[2], p[1], p[0]]
            } else {
                [p[1], p[2], p[3]]
            });
        }
    }
    (width, height, pixels)
}

fn png_rgb(path: &Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

/// Xvfb and an xterm that is a VT340 with sixel graphics, running `command`.
struct Xterm {
    display: String,
    window: String,
    _xterm: Kill,
    _xvfb: Kill,
}

impl Xterm {
    /// None (after saying what is missing) where the X tools are not installed.
    fn start(command: &str, display_offset: u32) -> Option<Self> {
        let missing: Vec<&str> = ["xterm", "Xvfb", "xdotool", "xwd"]
            .into_iter()
            .filter(|t| !have(t))
            .collect();
        if !missing.is_empty() {
            println!(
                "skipped: {} not installed (Debian: apt-get install xterm xvfb xdotool x11-apps)",
                missing.join(", ")
            );
            return None;
        }
        // A killed Xvfb leaves its lock file behind, and a new one refuses that display: skip
        // every display that has one.
        let first = 100 + display_offset + std::process::id() % 400;
        let number = (first..first + 1000)
            .step_by(2)
            .find(|n| {
                !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                    && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            })
            .expect("a free X display number");
        let display = format!(":{number}");
        let xvfb = Kill(
            Command::new("Xvfb")
                .args([
                    display.as_str(),
                    "-screen",
                    "0",
                    "1280x800x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(1500));
        let xterm = Kill(
            Command::new("xterm")
                .args([
                    "-ti",
                    "vt340",
                    "-geometry",
                    "100x30+0+0",
                    "-fa",
                    "Monospace",
                    "-fs",
                    "10",
                ])
                .args([
                    "-xrm",
                    "XTerm*decTerminalID: vt340",
                    "-xrm",
                    "XTerm*numColorRegisters: 256",
                ])
                .args(["-e", "sh", "-c", command])
                .env("DISPLAY", &display)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        let window = loop {
            let found = xdotool(&display, &["search", "--class", "xterm"]);
            if let Some(w) = found.lines().next() {
                break w.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "xterm opened a window"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        Some(Self {
            display,
            window,
            _xterm: xterm,
            _xvfb: xvfb,
        })
    }

    /// Types a key into the window (xterm ignores synthetic events; keys typed into the
    /// focused window arrive as real ones).
    fn key(&self, key: &str) {
        xdotool(&self.display, &["windowfocus", "--sync", &self.window]);
        xdotool(&self.display, &["key", "--window", &self.window, key]);
    }

    /// The screen's pixels, the screen's width, and the window's size.
    fn screenshot(&self) -> (Vec<[u8; 3]>, usize, usize, usize) {
        let geometry = xdotool(
            &self.display,
            &["getwindowgeometry", "--shell", &self.window],
        );
        let get = |key: &str| -> usize {
            geometry
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap()
        };
        let shot = Command::new("xwd")
            .args(["-root", "-silent", "-display", &self.display])
            .output()
            .unwrap();
        assert!(shot.status.success());
        let (width, _, pixels) = read_xwd(&shot.stdout);
        (pixels, width, get("WIDTH"), get("HEIGHT"))
    }
}

/// Waits for the first PNG in `dir`.
fn first_png(dir: &Path, start: Instant) -> PathBuf {
    loop {
        let found = std::fs::read_dir(dir).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "png"))
        });
        if let Some(p) = found {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the render finished"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The picture is the box of strongly coloured pixels in the region (the interface itself is
/// grey text on black): it must have the PNG's aspect ratio and show the PNG's pixels.
fn assert_picture_shows(
    pixels: &[[u8; 3]],
    width: usize,
    (rx0, ry0, rx1, ry1): (usize, usize, usize, usize),
    png: &Path,
    cells: usize,
) {
    let colourful = |p: [u8; 3]| p.iter().max().unwrap() - p.iter().min().unwrap() > 60;
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in ry0..ry1 {
        for x in rx0..rx1 {
            if colourful(pixels[y * width + x]) {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    assert!(
        x1 > x0 + 32 && y1 > y0 + 32,
        "a picture in the region: box {x0},{y0}..{x1},{y1}"
    );
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let (iw, ih, rgb) = png_rgb(png);
    let aspect = (bw as f64 / bh as f64) / (iw as f64 / ih as f64);
    assert!(
        (aspect - 1.0).abs() < 0.1,
        "drawn with its aspect ratio: {bw}x{bh} for {iw}x{ih}"
    );
    // Compare on a grid of `cells` x `cells` means: a terminal may smooth, quantize to its
    // palette and dither, which scrambles single pixels of a noisy picture but not areas.
    let mean = |at: &dyn Fn(usize, usize) -> [u8; 3], w: usize, h: usize, cx: usize, cy: usize| {
        let (xa, xb) = (
            cx * w / cells,
            ((cx + 1) * w / cells).max(cx * w / cells + 1),
        );
        let (ya, yb) = (
            cy * h / cells,
            ((cy + 1) * h / cells).max(cy * h / cells + 1),
        );
        let mut sum = [0.0; 3];
        for y in ya..yb {
            for x in xa..xb {
                let p = at(x, y);
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
            }
        }
        sum.map(|v| v / ((xb - xa) * (yb - ya)) as f64)
    };
    let screen = |x: usize, y: usize| pixels[(y0 + y) * width + x0 + x];
    let image = |x: usize, y: usize| {
        let p = &rgb[(y * iw + x) * 3..][..3];
        [p[0], p[1], p[2]]
    };
    let (mut shown, mut expected) = (Vec::new(), Vec::new());
    for cy in 0..cells {
        for cx in 0..cells {
            shown.extend(mean(&screen, bw, bh, cx, cy));
            expected.extend(mean(&image, iw, ih, cx, cy));
        }
    }
    let r = correlation(&shown, &expected);
    println!("picture box {bw}x{bh} at {x0},{y0}; correlation with the PNG {r:.3}");
    assert!(
        r > 0.9,
        "the screen shows the written PNG (correlation {r:.3})"
    );
}

#[test]
fn the_rendered_image_shows_in_xterm_with_sixel() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(home.join("data")).unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let session = serde_json::json!({
        "prompt": "a red fox",
        "params": { "model": model.display().to_string(), "steps": 2, "seed": 7, "seed_locked": true }
    });
    std::fs::write(home.join("data/session.json"), session.to_string()).unwrap();
    let studio = format!(
        "cd '{}' && EASEL_HOME='{}' '{}' tui --device cpu --graphics sixel",
        root.path().display(),
        home.display(),
        env!("CARGO_BIN_EXE_easel")
    );
    let Some(xterm) = Xterm::start(&studio, 0) else {
        return;
    };
    let start = Instant::now();
    // Time for the studio to start and probe the terminal before keys arrive.
    std::thread::sleep(Duration::from_secs(4));
    xterm.key("F5");
    let png = first_png(&root.path().join("outputs"), start);
    std::thread::sleep(Duration::from_secs(3));
    let (pixels, width, win_w, win_h) = xterm.screenshot();
    xterm.key("ctrl+q");
    // The preview pane: the right half above the queue.
    assert_picture_shows(
        &pixels,
        width,
        (win_w / 2, 0, win_w, win_h * 6 / 10),
        &png,
        64,
    );
}

/// `easel generate --preview --graphics sixel` prints the finished image at the cursor.
#[test]
fn generate_preview_shows_the_image_in_xterm_with_sixel() {
    let root = tempfile::tempdir().unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let command = format!(
        "cd '{}' && EASEL_HOME='{}/home' '{}' generate 'a red fox' --model '{}' --steps 2 \
         --seed 7 --device cpu --preview --graphics sixel; sleep 120",
        root.path().display(),
        root.path().display(),
        env!("CARGO_BIN_EXE_easel"),
        model.display()
    );
    let Some(xterm) = Xterm::start(&command, 400) else {
        return;
    };
    let start = Instant::now();
    let png = first_png(&root.path().join("outputs"), start);
    std::thread::sleep(Duration::from_secs(3));
    let (pixels, width, win_w, win_h) = xterm.screenshot();
    assert_picture_shows(&pixels, width, (0, 0, win_w, win_h), &png, 8);
}
