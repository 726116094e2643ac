//! AUTOMATIC1111's attention nudging (Ctrl-Up/Down in its prompt box): the word under the
//! cursor becomes `(word:1.1)`; inside `(text:w)` the weight moves by the step; a weight
//! that returns to 1 drops its brackets.

/// Returns the new text and cursor, or None when the cursor is on no word.
pub fn nudge(text: &str, cursor: usize, delta: f64) -> Option<(String, usize)> {
    if let Some((open, colon, close)) = enclosing_weight(text, cursor) {
        let weight: f64 = text[colon + 1..close].trim().parse().ok()?;
        let new = round(weight + delta);
        let inner = &text[open + 1..colon];
        if (new - 1.0).abs() < 1e-9 {
            let out = format!("{}{}{}", &text[..open], inner, &text[close + 1..]);
            let cursor = open + inner.len().min(cursor.saturating_sub(open + 1));
            return Some((out, cursor));
        }
        let out = format!(
            "{}({}:{}){}",
            &text[..open],
            inner,
            format_weight(new),
            &text[close + 1..]
        );
        return Some((out, cursor.min(open + 1 + inner.len())));
    }
    let (start, end) = word_at(text, cursor)?;
    let new = round(1.0 + delta);
    let out = format!(
        "{}({}:{}){}",
        &text[..start],
        &text[start..end],
        format_weight(new),
        &text[end..]
    );
    Some((out, cursor + 1))
}

/// `(` ... `:` number `)` around the cursor, as byte offsets of the three characters.
fn enclosing_weight(text: &str, cursor: usize) -> Option<(usize, usize, usize)> {
    let open = text[..cursor.min(text.len())].rfind('(')?;
    if text[open..cursor].contains(')') {
        return None;
    }
    let close = open + text[open..].find(')')?;
    if close < cursor.saturating_sub(1) {
        return None;
    }
    let colon = open + text[open..close].rfind(':')?;
    text[colon + 1..close].trim().parse::<f64>().ok()?;
    Some((open, colon, close))
}

fn word_at(text: &str, cursor: usize) -> Option<(usize, usize)> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'' || c == '-';
    let start = text[..cursor]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word(*c))
        .last()
        .map_or(cursor, |(i, _)| i);
    let end = cursor
        + text[cursor..]
            .char_indices()
            .find(|(_, c)| !is_word(*c))
            .map_or(text.len() - cursor, |(i, _)| i);
    (start < end).then_some((start, end))
}

fn round(w: f64) -> f64 {
    (w * 100.0).round() / 100.0
}

/// As A1111 shows weights: `1.1`, `0.9`, `1.25`.
fn format_weight(w: f64) -> String {
    let s = format!("{w:.2}");
    let s = s.trim_end_matches('0');
    let s = s
        .strip_suffix('.')
        .map_or(s.to_string(), |t| format!("{t}.0"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_gets_wrapped_then_adjusted_then_unwrapped() {
        let (t, c) = nudge("a red fox", 7, 0.1).unwrap();
        assert_eq!(t, "a red (fox:1.1)");
        let (t, c) = nudge(&t, c, 0.1).unwrap();
        assert_eq!(t, "a red (fox:1.2)");
        let (t, c) = nudge(&t, c, -0.1).unwrap();
        let (t, _) = nudge(&t, c, -0.1).unwrap();
        assert_eq!(t, "a red fox");
        let (t, _) = nudge("fox", 0, -0.1).unwrap();
        assert_eq!(t, "(fox:0.9)");
        assert_eq!(nudge("a  b", 2, 0.1), None);
    }
}
