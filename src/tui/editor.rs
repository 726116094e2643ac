//! A small multi-line text editor for prompts: cursor moves, word motions, undo/redo, paste,
//! and AUTOMATIC1111's weight nudging. Pure data; the view draws it.
use super::weight;

/// How many edits undo remembers.
const UNDO_LIMIT: usize = 200;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Editor {
    text: String,
    /// Byte offset, always on a character boundary.
    cursor: usize,
    undo: Vec<(String, usize)>,
    redo: Vec<(String, usize)>,
    /// Typing runs merge into one undo step; any other edit starts a new one.
    typing: bool,
}

impl Editor {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            cursor: text.len(),
            ..Self::default()
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Replaces the text as one undoable edit (loading a preset or a recipe).
    pub fn set_text(&mut self, text: &str) {
        if text != self.text {
            self.checkpoint();
            self.text = text.to_string();
            self.cursor = self.text.len();
        }
    }

    /// The cursor's line and column (in characters), 0-based.
    pub fn line_col(&self) -> (usize, usize) {
        let before = &self.text[..self.cursor];
        let line = before.matches('\n').count();
        let col = before.rsplit('\n').next().unwrap_or("").chars().count();
        (line, col)
    }

    fn checkpoint(&mut self) {
        self.undo.push((self.text.clone(), self.cursor));
        if self.undo.len() > UNDO_LIMIT {
            self.undo.remove(0);
        }
        self.redo.clear();
        self.typing = false;
    }

    pub fn insert_char(&mut self, c: char) {
        if !self.typing || c.is_whitespace() {
            self.checkpoint();
            self.typing = true;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts pasted text as one edit; carriage returns become newlines.
    pub fn insert_str(&mut self, s: &str) {
        let clean = s.replace("\r\n", "\n").replace('\r', "\n");
        if clean.is_empty() {
            return;
        }
        self.checkpoint();
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    pub fn backspace(&mut self) {
        if let Some(prev) = self.prev_boundary(self.cursor) {
            self.checkpoint();
            self.text.replace_range(prev..self.cursor, "");
            self.cursor = prev;
        }
    }

    pub fn delete(&mut self) {
        if let Some(next) = self.next_boundary(self.cursor) {
            self.checkpoint();
            self.text.replace_range(self.cursor..next, "");
        }
    }

    /// Deletes from the start of the word before the cursor to the cursor (Ctrl-W).
    pub fn delete_word_back(&mut self) {
        let start = self.word_left_of(self.cursor);
        if start < self.cursor {
            self.checkpoint();
            self.text.replace_range(start..self.cursor, "");
            self.cursor = start;
        }
    }

    fn prev_boundary(&self, at: usize) -> Option<usize> {
        self.text[..at].char_indices().next_back().map(|(i, _)| i)
    }

    fn next_boundary(&self, at: usize) -> Option<usize> {
        self.text[at..].chars().next().map(|c| at + c.len_utf8())
    }

    pub fn left(&mut self) {
        self.typing = false;
        if let Some(p) = self.prev_boundary(self.cursor) {
            self.cursor = p;
        }
    }

    pub fn right(&mut self) {
        self.typing = false;
        if let Some(n) = self.next_boundary(self.cursor) {
            self.cursor = n;
        }
    }

    fn word_left_of(&self, at: usize) -> usize {
        let chars: Vec<(usize, char)> = self.text[..at].char_indices().collect();
        let mut i = chars.len();
        while i > 0 && !is_word(chars[i - 1].1) {
            i -= 1;
        }
        while i > 0 && is_word(chars[i - 1].1) {
            i -= 1;
        }
        chars.get(i).map_or(at, |(b, _)| *b)
    }

    pub fn word_left(&mut self) {
        self.typing = false;
        self.cursor = self.word_left_of(self.cursor);
    }

    pub fn word_right(&mut self) {
        self.typing = false;
        let rest: Vec<(usize, char)> = self.text[self.cursor..].char_indices().collect();
        let mut i = 0;
        while i < rest.len() && !is_word(rest[i].1) {
            i += 1;
        }
        while i < rest.len() && is_word(rest[i].1) {
            i += 1;
        }
        self.cursor += rest
            .get(i)
            .map_or(self.text.len() - self.cursor, |(b, _)| *b);
    }

    pub fn home(&mut self) {
        self.typing = false;
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
    }

    pub fn end(&mut self) {
        self.typing = false;
        self.cursor += self.text[self.cursor..]
            .find('\n')
            .unwrap_or(self.text.len() - self.cursor);
    }

    /// Moves a line up (-1) or down (+1), keeping the column where the line allows; false at
    /// the first or last line, so focus may move on.
    pub fn vertical(&mut self, delta: isize) -> bool {
        self.typing = false;
        let (line, col) = self.line_col();
        let lines: Vec<&str> = self.text.split('\n').collect();
        let target = line as isize + delta;
        if target < 0 || target >= lines.len() as isize {
            return false;
        }
        let target = target as usize;
        let start: usize = lines[..target].iter().map(|l| l.len() + 1).sum();
        let within: usize = lines[target]
            .char_indices()
            .nth(col)
            .map_or(lines[target].len(), |(b, _)| b);
        self.cursor = start + within;
        true
    }

    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some((text, cursor)) => {
                self.redo
                    .push((std::mem::take(&mut self.text), self.cursor));
                self.text = text;
                self.cursor = cursor;
                self.typing = false;
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some((text, cursor)) => {
                self.undo
                    .push((std::mem::take(&mut self.text), self.cursor));
                self.text = text;
                self.cursor = cursor;
                self.typing = false;
                true
            }
            None => false,
        }
    }

    /// AUTOMATIC1111's Ctrl-Up/Down: changes the weight of the word (or `(...:w)` group) under
    /// the cursor by `delta`; false when there is no word there.
    pub fn nudge_weight(&mut self, delta: f64) -> bool {
        match weight::nudge(&self.text, self.cursor, delta) {
            Some((text, cursor)) => {
                self.checkpoint();
                self.text = text;
                self.cursor = cursor;
                true
            }
            None => false,
        }
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '\''
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_undo_redo_and_words() {
        let mut e = Editor::new("");
        for c in "a red fox".chars() {
            e.insert_char(c);
        }
        assert_eq!(e.text(), "a red fox");
        e.word_left();
        assert_eq!(e.cursor(), 6);
        e.word_left();
        assert_eq!(e.cursor(), 2);
        e.word_right();
        assert_eq!(e.cursor(), 5);
        assert!(e.undo());
        assert_eq!(e.text(), "a red");
        assert!(e.redo());
        assert_eq!(e.text(), "a red fox");
        e.end();
        e.delete_word_back();
        assert_eq!(e.text(), "a red ");
        e.insert_str("fox\r\nsnow");
        assert_eq!(e.text(), "a red fox\nsnow");
        assert_eq!(e.line_col(), (1, 4));
        assert!(e.vertical(-1));
        assert_eq!(e.line_col(), (0, 4));
        assert!(!e.vertical(-1));
        e.home();
        assert_eq!(e.cursor(), 0);
        e.insert_char('ü');
        e.left();
        e.right();
        e.backspace();
        assert_eq!(e.text(), "a red fox\nsnow");
    }
}
