//! Drawing the studio with ratatui: a pure function of the state (images come from the
//! image cache, which is absent in snapshot tests).
use super::app::{App, Focus, JobState, Level, Overlay};
use super::editor::Editor;
use super::images::Images;
use super::params::Field;
use super::tokens::WINDOW;
use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

/// Colours, or none at all when NO_COLOR is set (emphasis stays: bold and reverse).
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Self {
        Self {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn focus(self, focused: bool) -> Style {
        match (focused, self.color) {
            (true, true) => Style::default().fg(Color::Yellow),
            (true, false) => Style::default().add_modifier(Modifier::BOLD),
            _ => Style::default(),
        }
    }

    fn error(self) -> Style {
        if self.color {
            Style::default().fg(Color::Red)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }
}

pub fn draw(
    frame: &mut Frame,
    app: &App,
    help: &[(String, String)],
    mut images: Option<&mut Images>,
    theme: Theme,
) {
    let area = frame.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Fill(1), Constraint::Length(2)])
        .split(area);
    if app.zoom {
        preview(frame, rows[0], app, images.as_deref_mut(), theme);
        status(frame, rows[1], app, theme);
        return;
    }
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(rows[0]);
    // The prompt keeps 4 lines; on short terminals the parameters scroll instead.
    let params_height = (Field::ALL.len() as u16 + 2).min(rows[0].height.saturating_sub(10).max(3));
    let left = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Min(4),
            Constraint::Length(4),
            Constraint::Length(params_height),
        ])
        .split(cols[0]);
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Min(5),
            Constraint::Length(6),
            // Tall terminals get a strip of thumbnails; short ones a line of labels.
            Constraint::Length(if area.height >= 40 { 8 } else { 3 }),
        ])
        .split(cols[1]);

    let (tokens, chunks) = app.token_count;
    let prompt_title = if chunks > 1 {
        format!(" Prompt {tokens}/{} ({chunks} chunks) ", chunks * WINDOW)
    } else {
        format!(" Prompt {tokens}/{WINDOW} ")
    };
    editor(
        frame,
        left[0],
        &app.prompt,
        &prompt_title,
        app.focus == Focus::Prompt && app.overlay == Overlay::None,
        theme,
    );
    editor(
        frame,
        left[1],
        &app.negative,
        " Negative ",
        app.focus == Focus::Negative && app.overlay == Overlay::None,
        theme,
    );
    params(frame, left[2], app, theme);
    preview(frame, right[0], app, images.as_deref_mut(), theme);
    queue(frame, right[1], app, theme);
    strip(frame, right[2], app, images, theme);
    status(frame, rows[1], app, theme);

    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => help_overlay(frame, area, help, theme),
        Overlay::SavePreset(name) => save_overlay(frame, area, name, theme),
        Overlay::Presets { .. } => presets_overlay(frame, area, app, theme),
        Overlay::Gallery { .. } => gallery_overlay(frame, area, app, theme),
        Overlay::Models { .. } => models_overlay(frame, area, app, theme),
    }
}

fn block(title: &str, focused: bool, theme: Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .title(title.to_string())
        .border_style(theme.focus(focused))
}

/// Hard-wraps lines at `width` characters; returns the rows and the cursor's row and column.
fn wrap(editor: &Editor, width: usize) -> (Vec<String>, usize, usize) {
    let width = width.max(1);
    let mut rows = Vec::new();
    let (mut cur_row, mut cur_col) = (0, 0);
    let cursor = editor.cursor();
    let mut offset = 0;
    for line in editor.text().split('\n') {
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let start_row = rows.len();
        if chars.is_empty() {
            rows.push(String::new());
        }
        for chunk in chars.chunks(width) {
            rows.push(chunk.iter().map(|(_, c)| c).collect());
        }
        if cursor >= offset && cursor <= offset + line.len() {
            let col = line[..cursor - offset].chars().count();
            cur_row = start_row + col / width;
            cur_col = col % width;
            if col > 0 && col % width == 0 && col == chars.len() {
                // At the end of a full row: stay on it rather than open a phantom one.
                cur_row -= 1;
                cur_col = width;
            }
        }
        offset += line.len() + 1;
    }
    (rows, cur_row, cur_col)
}

fn editor(
    frame: &mut Frame,
    area: Rect,
    editor: &Editor,
    title: &str,
    focused: bool,
    theme: Theme,
) {
    let b = block(title, focused, theme);
    let inner = b.inner(area);
    let width = usize::from(inner.width.saturating_sub(1)).max(1);
    let (rows, row, col) = wrap(editor, width);
    let height = usize::from(inner.height).max(1);
    let scroll = (row + 1).saturating_sub(height);
    let lines: Vec<Line> = rows
        .into_iter()
        .skip(scroll)
        .take(height)
        .map(Line::from)
        .collect();
    frame.render_widget(Paragraph::new(lines).block(b), area);
    if focused {
        frame.set_cursor_position(Position::new(
            inner.x + col as u16,
            inner.y + (row - scroll) as u16,
        ));
    }
}

fn params(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let focused = app.focus == Focus::Params && app.overlay == Overlay::None;
    let rows = usize::from(area.height.saturating_sub(2)).max(1);
    let total = Field::ALL.len();
    let at = Field::ALL.iter().position(|f| *f == app.field).unwrap_or(0);
    // A window of the fields that keeps the selected one in view.
    let start = at.saturating_sub(rows - 1).min(total.saturating_sub(rows));
    let title = if rows < total {
        format!(
            " Parameters {}-{}/{total} ",
            start + 1,
            (start + rows).min(total)
        )
    } else {
        " Parameters ".to_string()
    };
    let b = block(&title, focused, theme);
    let inner = b.inner(area);
    let label_width = Field::ALL
        .iter()
        .map(|f| f.label().len())
        .max()
        .unwrap_or(0);
    let value_width = usize::from(inner.width).saturating_sub(label_width + 1);
    let mut lines = Vec::new();
    for field in Field::ALL.iter().skip(start).take(rows) {
        let selected = focused && app.field == *field;
        let value = match (&app.field_input, selected, app.status.native) {
            (Some(text), true, _) => format!("{text}_"),
            (_, _, Some((w, h)))
                if *field == Field::Size
                    && app.params.size.is_none()
                    && app.params.init_image.is_none() =>
            {
                format!("native ({w}x{h})")
            }
            _ => app.params.show(*field),
        };
        let value = tail(&value, value_width);
        let label = format!("{:>label_width$} ", field.label());
        let mut style = Style::default();
        if selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let mut spans = vec![
            Span::styled(label, theme.fg(Color::DarkGray)),
            Span::styled(value, style),
        ];
        if selected {
            if let Some(err) = &app.field_error {
                spans.push(Span::styled(format!("  {err}"), theme.error()));
            }
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines).block(b), area);
    let _ = inner;
}

/// The end of `text` in at most `width` characters: a path's file name matters most.
fn tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width || width < 2 {
        return text.to_string();
    }
    let kept: String = text.chars().skip(n - (width - 1)).collect();
    format!("…{kept}")
}

fn preview(frame: &mut Frame, area: Rect, app: &App, images: Option<&mut Images>, theme: Theme) {
    let title = match (app.live.is_some(), app.results.get(app.shown), app.compare) {
        (true, _, _) => " Preview (live) ".to_string(),
        (_, Some(_), Some(a)) => format!(" A/B: {} | {} ", a + 1, app.shown + 1),
        (_, Some(r), None) => format!(
            " Result {}/{}: {} ",
            app.shown + 1,
            app.results.len(),
            r.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        _ => " Preview ".to_string(),
    };
    let title = match (app.zoom, app.magnify.level) {
        (true, 1) => format!("{title}(fit; +/- zoom) "),
        (true, level) => format!("{title}({level}x; arrows pan, 0 fits) "),
        _ => title,
    };
    let b = block(&title, false, theme);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    if let Some(images) = images {
        if images.draw(frame, inner, app) {
            return;
        }
    }
    let text = match app.results.get(app.shown) {
        Some(r) if app.live.is_none() => format!(
            "{}x{} image\n{}",
            r.picture.width,
            r.picture.height,
            r.path.display()
        ),
        _ if app.live.is_some() => "sampling...".to_string(),
        _ if app.params.model.is_none() => "No model yet.\nType a diffusers folder or .safetensors file into\nParameters > model (Tab to it, type, Enter),\nor start with --model PATH.".to_string(),
        _ => "Write a prompt, then F5 (or Ctrl-Enter) to render.\nF1 or ? for help.".to_string(),
    };
    frame.render_widget(
        Paragraph::new(text).wrap(ratatui::widgets::Wrap { trim: false }),
        inner,
    );
}

fn queue(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let focused = app.focus == Focus::Queue && app.overlay == Overlay::None;
    let b = block(" Queue ", focused, theme);
    let inner = b.inner(area);
    let height = usize::from(inner.height);
    let start = app.queue_selected.saturating_sub(height.saturating_sub(1));
    let lines: Vec<Line> = app
        .queue
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, j)| {
            let state = match &j.state {
                _ if j.cancelling => "cancelling".to_string(),
                JobState::Queued => "queued".to_string(),
                JobState::Loading => "loading".to_string(),
                JobState::Rendering {
                    image,
                    images,
                    step,
                    steps,
                } if *images > 1 => {
                    format!("{}/{} step {step}/{steps}", image + 1, images)
                }
                JobState::Rendering { step, steps, .. } => format!("step {step}/{steps}"),
                JobState::Done => "done".to_string(),
                JobState::Failed(_) => "failed".to_string(),
                JobState::Cancelled => "cancelled".to_string(),
            };
            let seed = j.seed.map(|s| format!(" seed {s}")).unwrap_or_default();
            let tag = j.tag.as_ref().map(|t| format!(" {t}")).unwrap_or_default();
            let prompt: String = j.prompt.replace('\n', " ").chars().take(40).collect();
            let mut style = match &j.state {
                JobState::Failed(_) => theme.error(),
                JobState::Done => theme.fg(Color::Green),
                _ => Style::default(),
            };
            if focused && i == app.queue_selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::styled(format!("#{} {state}{tag}{seed} {prompt}", j.id), style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(b), area);
}

fn strip(frame: &mut Frame, area: Rect, app: &App, images: Option<&mut Images>, theme: Theme) {
    let b = block(" Results (F7/F8, F9 A/B) ", false, theme);
    let inner = b.inner(area);
    if let Some(images) = images {
        if inner.height >= 3 && !app.results.is_empty() {
            frame.render_widget(b, area);
            images.draw_strip(frame, inner, app);
            return;
        }
    }
    let mut spans = Vec::new();
    for (i, r) in app.results.iter().enumerate() {
        let seed = r
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!(" {}:{} ", i + 1, seed.rsplit('-').nth(1).unwrap_or(&seed));
        let mut style = Style::default();
        if i == app.shown {
            style = style.add_modifier(Modifier::REVERSED);
        }
        if Some(i) == app.compare {
            style = style.add_modifier(Modifier::UNDERLINED);
        }
        spans.push(Span::styled(label, style));
    }
    if spans.is_empty() {
        spans.push(Span::styled("none yet", theme.fg(Color::DarkGray)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).block(b), area);
}

fn status(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let s = &app.status;
    let mut parts = Vec::new();
    match (&s.device, &s.dtype) {
        (Some(d), Some(t)) => parts.push(format!("{d} {t}")),
        _ => parts.push("engine idle".to_string()),
    }
    if let Some(m) = &s.loading {
        let name = std::path::Path::new(m)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.clone());
        parts.push(match &s.load_stage {
            Some((component, done)) => {
                format!("loading {name}: {component} {:.0}%", done * 100.0)
            }
            None => format!("loading {name}"),
        });
    } else if let Some(m) = &s.model {
        parts.push(
            std::path::Path::new(m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| m.clone()),
        );
    }
    if let Some(mb) = s.rss_mb {
        parts.push(format!("RAM {mb} MB"));
    }
    if let Some((used, total)) = s.vram_mb {
        parts.push(format!("VRAM {used}/{total} MB"));
    }
    if let Some(r) = s.it_s {
        parts.push(format!("{r:.2} it/s"));
    }
    if let Some(eta) = s.eta_s {
        parts.push(format!("ETA {eta:.0}s"));
    }
    parts.push("F1 help".to_string());
    let top = Line::styled(
        parts.join(" | "),
        Style::default().add_modifier(Modifier::REVERSED),
    );
    let bottom = match &app.message {
        Some(m) => Line::styled(
            m.text.replace('\n', " "),
            if m.level == Level::Error {
                theme.error()
            } else {
                Style::default()
            },
        ),
        None => Line::from(""),
    };
    frame.render_widget(Paragraph::new(vec![top, bottom]), area);
}

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn help_overlay(frame: &mut Frame, area: Rect, help: &[(String, String)], theme: Theme) {
    const NOTES: [&str; 3] = [
        "params: Up/Down pick, Left/Right change, type + Enter (model: a list)",
        "queue: Up/Down pick, Del cancels or removes",
        "keys: keymap.toml in easel's config folder",
    ];
    // One column with every key where it fits; else two columns with each action's first key.
    let one_column = area.height as usize >= help.len() + NOTES.len() + 2 && area.width >= 76;
    let rows = if one_column {
        help.len()
    } else {
        help.len().div_ceil(2)
    };
    let rect = popup(area, 78, (rows + NOTES.len() + 2) as u16);
    frame.render_widget(Clear, rect);
    let b = block(" Keys (Esc closes) ", true, theme);
    let inner = b.inner(rect);
    frame.render_widget(b, rect);
    let entry = |(k, d): &(String, String), key_width: usize, all_keys: bool| {
        let k = if all_keys {
            k.as_str()
        } else {
            k.split(", ").next().unwrap_or("")
        };
        Line::from(vec![
            Span::styled(format!("{k:>key_width$} "), theme.fg(Color::Cyan)),
            Span::raw(d.clone()),
        ])
    };
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(rows as u16), Constraint::Min(0)])
        .split(inner);
    if one_column {
        let lines: Vec<Line> = help.iter().map(|h| entry(h, 22, true)).collect();
        frame.render_widget(Paragraph::new(lines), parts[0]);
    } else {
        let halves = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
            .split(parts[0]);
        let (left, right) = help.split_at(rows.min(help.len()));
        for (half, list) in [(halves[0], left), (halves[1], right)] {
            let lines: Vec<Line> = list.iter().map(|h| entry(h, 10, false)).collect();
            frame.render_widget(Paragraph::new(lines), half);
        }
    }
    let notes: Vec<Line> = NOTES.iter().map(|n| Line::from(format!(" {n}"))).collect();
    frame.render_widget(Paragraph::new(notes), parts[1]);
}

fn save_overlay(frame: &mut Frame, area: Rect, name: &Editor, theme: Theme) {
    let rect = popup(area, 50, 4);
    frame.render_widget(Clear, rect);
    let b = block(" Save preset as (Enter saves, Esc) ", true, theme);
    let inner = b.inner(rect);
    frame.render_widget(Paragraph::new(name.text().to_string()).block(b), rect);
    let col = name.text()[..name.cursor()].chars().count() as u16;
    frame.set_cursor_position(Position::new(inner.x + col.min(inner.width), inner.y));
}

/// A searchable list in a popup: the title, the query line, the items with the selected one
/// reversed and scrolled into view. Returns the two lines under the list, for a footer.
fn list_overlay(
    frame: &mut Frame,
    rect: Rect,
    title: &str,
    query: String,
    items: Vec<String>,
    selected: usize,
    theme: Theme,
) -> Rect {
    frame.render_widget(Clear, rect);
    let b = block(title, true, theme);
    let inner = b.inner(rect);
    frame.render_widget(b, rect);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(2),
        ])
        .split(inner);
    frame.render_widget(Paragraph::new(query), rows[0]);
    let height = usize::from(rows[1].height);
    let start = selected.saturating_sub(height.saturating_sub(1));
    let lines: Vec<Line> = items
        .into_iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, item)| {
            let mut style = Style::default();
            if i == selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::styled(item, style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), rows[1]);
    rows[2]
}

fn presets_overlay(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Overlay::Presets {
        filter,
        selected,
        confirm_delete,
        rename,
    } = &app.overlay
    else {
        return;
    };
    let rect = popup(area, 70, area.height.saturating_sub(4).max(8));
    let list = app.filtered_presets();
    let items = list
        .iter()
        .map(|p| format!("{}{}", p.name, if p.builtin { " (built-in)" } else { "" }))
        .collect();
    let foot_area = list_overlay(
        frame,
        rect,
        " Presets: filter, Enter loads (stacks), Del, F2 rename, Ctrl-U update ",
        format!("filter: {}_", filter.text()),
        items,
        *selected,
        theme,
    );
    let foot = match (confirm_delete, list.get(*selected)) {
        _ if rename.is_some() => Line::from(format!(
            "rename to: {}_ (Enter renames, Esc keeps)",
            rename.as_ref().map(|e| e.text()).unwrap_or_default()
        )),
        (Some(name), _) => Line::styled(format!("delete {name}? y/n"), theme.error()),
        (None, Some(p)) => Line::from(format!("sets: {}", p.summary)),
        (None, None) => Line::from("no preset matches"),
    };
    frame.render_widget(
        Paragraph::new(foot).wrap(ratatui::widgets::Wrap { trim: true }),
        foot_area,
    );
}

fn gallery_overlay(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Overlay::Gallery {
        filter,
        selected,
        confirm_delete,
    } = &app.overlay
    else {
        return;
    };
    let rect = popup(
        area,
        area.width.saturating_sub(4).max(20),
        area.height.saturating_sub(4).max(8),
    );
    let list = app.filtered_gallery();
    let items: Vec<String> = list
        .iter()
        .map(|g| {
            let star = if g.favourite { "*" } else { " " };
            let time: String = g
                .time
                .chars()
                .take(16)
                .collect::<String>()
                .replace('T', " ");
            let prompt = g.recipe.prompt.replace('\n', " ");
            format!("{star} {time} seed {} {prompt}", g.recipe.seed)
        })
        .collect();
    let empty = items.is_empty();
    let foot_area = list_overlay(
        frame,
        rect,
        " Gallery: search, Enter loads, Del trashes, Ctrl-F fav, Ctrl-O opens ",
        format!("search: {}_", filter.text()),
        items,
        *selected,
        theme,
    );

    let foot = match (confirm_delete, list.get(*selected)) {
        (Some(path), _) => Line::styled(
            format!("move {} to the trash? y/n", path.display()),
            theme.error(),
        ),
        (None, Some(g)) => Line::from(format!(
            "{} | {} {} steps cfg {} {}x{}",
            g.path.display(),
            g.recipe.sampler.name(),
            g.recipe.steps,
            g.recipe.cfg,
            g.recipe.width,
            g.recipe.height
        )),
        (None, None) if empty => Line::from("no renders yet (or none match)"),
        (None, None) => Line::from(""),
    };
    frame.render_widget(
        Paragraph::new(foot).wrap(ratatui::widgets::Wrap { trim: true }),
        foot_area,
    );
}

fn models_overlay(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Overlay::Models { filter, selected } = &app.overlay else {
        return;
    };
    let rect = popup(
        area,
        area.width.saturating_sub(4).clamp(20, 100),
        area.height.saturating_sub(4).max(8),
    );
    let list = app.filtered_models();
    let width = list
        .iter()
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0);
    let current = app.params.model.as_deref();
    let items: Vec<String> = list
        .iter()
        .map(|m| {
            let mark = if Some(m.name.as_str()) == current {
                ">"
            } else if m.ready {
                " "
            } else {
                "-"
            };
            let default = if m.default { " (default)" } else { "" };
            format!("{mark} {:<width$}  {}{default}", m.name, m.detail)
        })
        .collect();
    let foot_area = list_overlay(
        frame,
        rect,
        " Models: filter, Enter uses it, Esc closes (a path can be typed into the field) ",
        format!("filter: {}_", filter.text()),
        items,
        *selected,
        theme,
    );
    let foot = match (&app.models, list.get(*selected)) {
        (None, _) => Line::from("reading the models..."),
        (Some(_), Some(m)) => match &m.hint {
            Some(hint) => Line::styled(format!("not ready: {hint}"), theme.error()),
            None => Line::from(format!("Enter renders with {} from now on", m.name)),
        },
        (Some(_), None) => Line::from(
            "no model matches: `easel models add PATH` registers a folder or file, \
             `easel models pull NAME` downloads one",
        ),
    };
    frame.render_widget(
        Paragraph::new(foot).wrap(ratatui::widgets::Wrap { trim: true }),
        foot_area,
    );
}
