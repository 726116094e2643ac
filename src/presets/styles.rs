//! AUTOMATIC1111's styles.csv: a header row, then one style per row with the columns name,
//! prompt and negative_prompt (old files: name, text). Read exactly as A1111 reads it, with
//! Python's csv module (`skipinitialspace=True`, UTF-8 with an optional BOM).
use super::error::{PresetError, Result};
use super::file::Preset;
use super::name::slug;
use crate::recipe::RecipePatch;

/// One data row of a CSV file with its header's column names; `line` is where the row starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub line: usize,
    pub fields: Vec<(String, String)>,
}

impl CsvRow {
    /// A column's value; "" when the row is shorter than the header (Python gives None).
    pub fn get(&self, column: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == column)
            .map(|(_, v)| v.as_str())
    }
}

fn csv_error(file: &str, line: usize, message: &str) -> PresetError {
    PresetError::Parse {
        file: file.to_string(),
        line,
        column: 1,
        message: message.to_string(),
    }
}

/// Splits CSV text into records of fields the way Python's csv reader does with the default
/// dialect and skipinitialspace: quotes open a field only at its start, "" is a quote inside
/// quotes, line breaks inside quotes belong to the field, blank lines are no records.
pub fn parse_records(text: &str, file: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut record_line = 1;
    // At the start of a field (spaces skipped), inside an unquoted or quoted field, or just
    // after a quote inside a quoted field.
    #[derive(PartialEq)]
    enum State {
        Start,
        Plain,
        Quoted,
        QuoteInQuoted,
    }
    let mut state = State::Start;
    let mut chars = text.chars().peekable();
    let mut at_record_start = true;
    while let Some(c) = chars.next() {
        if state == State::Quoted {
            // Line breaks inside quotes are kept exactly, \r\n included.
            if c == '"' {
                state = State::QuoteInQuoted;
            } else {
                field.push(c);
                if c == '\n' || (c == '\r' && chars.peek() != Some(&'\n')) {
                    line += 1;
                }
            }
            continue;
        }
        let newline = c == '\n' || c == '\r';
        if c == '\r' && chars.peek() == Some(&'\n') {
            chars.next();
        }
        if newline {
            if !(at_record_start && field.is_empty() && record.is_empty()) {
                record.push(std::mem::take(&mut field));
                records.push((record_line, std::mem::take(&mut record)));
            }
            line += 1;
            record_line = line;
            state = State::Start;
            at_record_start = true;
            continue;
        }
        at_record_start = false;
        match (&state, c) {
            (_, ',') => {
                record.push(std::mem::take(&mut field));
                state = State::Start;
            }
            (State::Start, ' ') => {}
            (State::Start, '"') => state = State::Quoted,
            (State::QuoteInQuoted, '"') => {
                field.push('"');
                state = State::Quoted;
            }
            _ => {
                field.push(c);
                state = State::Plain;
            }
        }
    }
    if state == State::Quoted {
        return Err(csv_error(
            file,
            record_line,
            "a quoted field is never closed (unexpected end of data): add the closing \"",
        ));
    }
    if !(at_record_start && field.is_empty() && record.is_empty()) {
        record.push(field);
        records.push((record_line, record));
    }
    Ok(records)
}

/// The rows of a CSV file keyed by its header, as Python's csv.DictReader gives them.
pub fn parse_csv(text: &str, file: &str) -> Result<Vec<CsvRow>> {
    let mut records = parse_records(text, file)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Ok(Vec::new());
    };
    Ok(records
        .map(|(line, values)| CsvRow {
            line,
            fields: header
                .iter()
                .cloned()
                .zip(values.into_iter().chain(std::iter::repeat(String::new())))
                .collect(),
        })
        .collect())
}

/// A style read from the file, as a preset to be, or the reason a row was left out.
#[derive(Debug, Clone, PartialEq)]
pub enum StyleRow {
    Style {
        line: usize,
        /// The name in the file, and the preset name made from it.
        style: String,
        name: String,
        preset: Box<Preset>,
    },
    Skipped {
        line: usize,
        style: String,
        reason: String,
    },
}

/// Every row of an AUTOMATIC1111 styles.csv turned into a preset (or a reason it was not).
/// When two rows make the same name, the later one wins, as in A1111.
pub fn read_styles(text: &str, file: &str) -> Result<Vec<StyleRow>> {
    let rows = parse_csv(text, file)?;
    let header: Vec<&str> = rows
        .first()
        .map(|r| r.fields.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    if !rows.is_empty() && !header.contains(&"name") {
        return Err(csv_error(
            file,
            1,
            "the first row must name the columns (name,prompt,negative_prompt), as AUTOMATIC1111's styles.csv does",
        ));
    }
    let prompt_column = if header.contains(&"prompt") {
        "prompt"
    } else {
        "text"
    };
    let mut out: Vec<StyleRow> = Vec::new();
    for row in rows {
        let style = row.get("name").unwrap_or("").to_string();
        let skip = |reason: &str| StyleRow::Skipped {
            line: row.line,
            style: style.clone(),
            reason: reason.to_string(),
        };
        if style.starts_with('#') {
            out.push(skip("a comment row"));
            continue;
        }
        if style.trim().is_empty() {
            out.push(skip("it has no name"));
            continue;
        }
        let prompt = row.get(prompt_column).unwrap_or("");
        let negative = row.get("negative_prompt").unwrap_or("");
        if prompt.trim().is_empty() && negative.trim().is_empty() {
            out.push(skip("it has neither a prompt nor a negative prompt"));
            continue;
        }
        let Some(name) = slug(&style) else {
            out.push(skip("no usable preset name can be made from its name"));
            continue;
        };
        let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        let preset = Box::new(Preset {
            description: Some(format!("AUTOMATIC1111 style {style:?}")),
            tags: vec!["a1111-style".into()],
            patch: RecipePatch {
                prompt: nonempty(prompt),
                negative_prompt: nonempty(negative),
                ..Default::default()
            },
            extra: toml::Table::new(),
        });
        for earlier in out.iter_mut() {
            if let StyleRow::Style {
                line,
                style: earlier_style,
                name: earlier_name,
                ..
            } = earlier
            {
                if *earlier_name == name {
                    *earlier = StyleRow::Skipped {
                        line: *line,
                        style: earlier_style.clone(),
                        reason: format!(
                            "row {} makes the same preset name {name:?} and wins",
                            row.line
                        ),
                    };
                }
            }
        }
        out.push(StyleRow::Style {
            line: row.line,
            style,
            name,
            preset,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<Vec<String>> {
        parse_records(text, "t.csv")
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    #[test]
    fn csv_edge_cases() {
        assert_eq!(records(""), Vec::<Vec<String>>::new());
        assert_eq!(records("a,b\n"), [["a", "b"]]);
        assert_eq!(records("a, b,  \"c, d\"\r\n"), [["a", "b", "c, d"]]);
        assert_eq!(records("\"say \"\"hi\"\"\",x"), [["say \"hi\"", "x"]]);
        assert_eq!(
            records("\"two\nlines\",y\n\nz"),
            [vec!["two\nlines", "y"], vec!["z"]]
        );
        assert_eq!(records("a\"b,c"), [["a\"b", "c"]]);
        assert_eq!(records("\"ab\"cd,e"), [["abcd", "e"]]);
        assert_eq!(records(",\n"), [["", ""]]);
        assert_eq!(records("\u{feff}n\rx"), [["n"], ["x"]]);
        assert_eq!(records("\"a\r\nb\"\r\n"), [["a\r\nb"]]);
        let err = parse_records("a\n\"open,b\n", "s.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.csv:2:1:") && err.contains("never closed"),
            "{err}"
        );
    }

    #[test]
    fn rows_follow_automatic1111() {
        let csv = "name,prompt,negative_prompt\n\
                   # notes,ignored,\n\
                   Film Look,\"{prompt}, film grain\",blurry\n\
                   ,orphan,\n\
                   Empty,,\n\
                   film-look,later wins,\n\
                   Short,only a prompt\n";
        let rows = read_styles(csv, "styles.csv").unwrap();
        let summary: Vec<String> = rows
            .iter()
            .map(|r| match r {
                StyleRow::Style { line, name, .. } => format!("{line} {name}"),
                StyleRow::Skipped { line, reason, .. } => format!("{line} skip {reason}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "2 skip a comment row",
                "3 skip row 6 makes the same preset name \"film-look\" and wins",
                "4 skip it has no name",
                "5 skip it has neither a prompt nor a negative prompt",
                "6 film-look",
                "7 short",
            ]
        );
        let StyleRow::Style { preset, .. } = &rows[5] else {
            panic!()
        };
        assert_eq!(preset.patch.prompt.as_deref(), Some("only a prompt"));
        assert_eq!(preset.patch.negative_prompt, None);

        let old = read_styles("name,text\nOld,\"{prompt}, old style\"\n", "s").unwrap();
        let StyleRow::Style { preset, .. } = &old[0] else {
            panic!()
        };
        assert_eq!(preset.patch.prompt.as_deref(), Some("{prompt}, old style"));
        let err = read_styles("a,b\n1,2\n", "s.csv").unwrap_err().to_string();
        assert!(err.contains("name,prompt,negative_prompt"), "{err}");
    }
}
