//! Inline images through ratatui-image: the terminal's graphics protocol is probed once at
//! start (kitty, sixel, iTerm2, else half-blocks), and resizing/encoding runs on helper
//! threads so drawing never waits for it. A resized terminal re-encodes on the next draw.
use super::app::App;
use crate::worker::Picture;
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::Frame;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::thread::{ResizeRequest, ResizeResponse, ThreadProtocol};
use ratatui_image::{Resize, StatefulImage};
use std::sync::mpsc::{self, Receiver};

/// What `--graphics` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Graphics {
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    Halfblocks,
}

/// One image slot (shown result, compare B, live preview) with its own resize thread.
struct Slot {
    protocol: ThreadProtocol,
    done: Receiver<ResizeResponse>,
    /// What the slot holds, to replace it only when that changes.
    holds: Option<Picture>,
}

impl Slot {
    fn new() -> Self {
        let (req_tx, req_rx) = mpsc::channel::<ResizeRequest>();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for request in req_rx {
                match request.resize_encode() {
                    Ok(done) => {
                        if done_tx.send(done).is_err() {
                            return;
                        }
                    }
                    Err(_) => continue,
                }
            }
        });
        Self {
            protocol: ThreadProtocol::new(req_tx, None),
            done: done_rx,
            holds: None,
        }
    }

    fn show(&mut self, picker: &Picker, picture: &Picture) {
        if self.holds.as_ref() == Some(picture) {
            return;
        }
        if let Some(img) = RgbImage::from_raw(picture.width, picture.height, picture.rgb.clone()) {
            self.protocol
                .replace_protocol(picker.new_resize_protocol(DynamicImage::ImageRgb8(img)));
            self.holds = Some(picture.clone());
        }
    }

    fn poll(&mut self) -> bool {
        let mut any = false;
        while let Ok(done) = self.done.try_recv() {
            any |= self.protocol.update_resized_protocol(done);
        }
        any
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect) {
        let widget = StatefulImage::<ThreadProtocol>::default()
            .resize(Resize::Scale(Some(FilterType::Triangle)));
        frame.render_stateful_widget(widget, area, &mut self.protocol);
    }
}

pub struct Images {
    picker: Picker,
    main: Slot,
    other: Slot,
    live: Slot,
    /// Thumbnails of the results strip, made as they are first needed.
    strip: Vec<Slot>,
}

impl Images {
    /// Probes the terminal (call in raw mode, before reading events); `choice` overrides.
    pub fn probe(choice: Graphics) -> Self {
        // Inside tmux the probe's queries may go unanswered, and its reader thread then eats
        // the first keystrokes: there, `auto` means half-blocks (a forced protocol still probes
        // for the font size).
        let in_tmux = std::env::var_os("TMUX").is_some_and(|v| !v.is_empty());
        let mut picker = match choice {
            Graphics::Halfblocks => Picker::halfblocks(),
            Graphics::Auto if in_tmux => Picker::halfblocks(),
            _ => Picker::from_query_stdio().unwrap_or_else(|_| Picker::halfblocks()),
        };
        let forced = match choice {
            Graphics::Kitty => Some(ProtocolType::Kitty),
            Graphics::Sixel => Some(ProtocolType::Sixel),
            Graphics::Iterm2 => Some(ProtocolType::Iterm2),
            Graphics::Halfblocks => Some(ProtocolType::Halfblocks),
            Graphics::Auto => None,
        };
        if let Some(p) = forced {
            picker.set_protocol_type(p);
        }
        Self::with_picker(picker)
    }

    pub fn with_picker(picker: Picker) -> Self {
        Self {
            picker,
            main: Slot::new(),
            other: Slot::new(),
            live: Slot::new(),
            strip: Vec::new(),
        }
    }

    pub fn protocol_name(&self) -> &'static str {
        match self.picker.protocol_type() {
            ProtocolType::Halfblocks => "half-blocks",
            ProtocolType::Sixel => "sixel",
            ProtocolType::Kitty => "kitty",
            ProtocolType::Iterm2 => "iTerm2",
        }
    }

    /// Takes finished encodes; true when the screen should be redrawn.
    pub fn poll(&mut self) -> bool {
        let mut any = self.main.poll() | self.other.poll() | self.live.poll();
        for slot in &mut self.strip {
            any |= slot.poll();
        }
        any
    }

    /// The results as thumbnails side by side, the shown one marked by a gap above it.
    pub fn draw_strip(&mut self, frame: &mut Frame, area: Rect, app: &App) {
        // A cell is about twice as tall as wide: a square thumbnail is 2 columns per row.
        let width = area.height.saturating_mul(2).max(2);
        let fit = usize::from(area.width / (width + 1)).min(app.results.len());
        while self.strip.len() < fit {
            self.strip.push(Slot::new());
        }
        for (i, (slot, result)) in self
            .strip
            .iter_mut()
            .zip(&app.results)
            .take(fit)
            .enumerate()
        {
            let x = area.x + (width + 1) * i as u16;
            let lift = u16::from(i != app.shown);
            let cell = Rect::new(x, area.y + lift, width, area.height - lift);
            slot.show(&self.picker, &result.picture);
            slot.draw(frame, cell);
        }
    }

    /// Draws what the preview pane shows; false when there is nothing to draw.
    pub fn draw(&mut self, frame: &mut Frame, area: Rect, app: &App) -> bool {
        let zoom = app.magnify;
        if let Some(live) = &app.live {
            self.live.show(&self.picker, &zoom.crop(live));
            self.live.draw(frame, area);
            return true;
        }
        let Some(shown) = app.results.get(app.shown) else {
            return false;
        };
        match app.compare.and_then(|a| app.results.get(a)) {
            Some(a) => {
                let halves = Layout::default()
                    .direction(Direction::Horizontal)
                    .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .split(area);
                // Both halves show the same region, so details compare side by side.
                self.other.show(&self.picker, &zoom.crop(&a.picture));
                self.other.draw(frame, halves[0]);
                self.main.show(&self.picker, &zoom.crop(&shown.picture));
                self.main.draw(frame, halves[1]);
            }
            None => {
                self.main.show(&self.picker, &zoom.crop(&shown.picture));
                self.main.draw(frame, area);
            }
        }
        true
    }
}
