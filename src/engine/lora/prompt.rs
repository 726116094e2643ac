//! AUTOMATIC1111's `<lora:NAME:WEIGHT>` prompt tags: which LoRAs a prompt asks for, and the
//! prompt without them (the tags are never given to the text encoder).

/// One `<lora:NAME>` or `<lora:NAME:WEIGHT>` tag.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub weight: f64,
}

/// Finds each tag: its byte range and what it says. Malformed tags (a weight that is not a
/// number) are left in the text, as AUTOMATIC1111 leaves them.
fn scan(prompt: &str) -> Vec<(std::ops::Range<usize>, LoraTag)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = prompt[from..].find("<lora:").map(|i| i + from) {
        let Some(end) = prompt[start..].find('>').map(|i| i + start) else {
            break;
        };
        let body = &prompt[start + "<lora:".len()..end];
        let (name, weight) = match body.rsplit_once(':') {
            Some((n, w)) => (n, w.trim().parse::<f64>().ok()),
            None => (body, Some(1.0)),
        };
        if let (false, Some(weight)) = (name.trim().is_empty(), weight) {
            found.push((
                start..end + 1,
                LoraTag {
                    name: name.trim().to_string(),
                    weight,
                },
            ));
        }
        from = end + 1;
    }
    found
}

/// The LoRAs a prompt's tags ask for, in order.
pub fn prompt_tags(prompt: &str) -> Vec<LoraTag> {
    scan(prompt).into_iter().map(|(_, t)| t).collect()
}

/// The prompt with its LoRA tags removed (and the spaces they leave tidied).
pub fn strip_tags(prompt: &str) -> String {
    let tags = scan(prompt);
    if tags.is_empty() {
        return prompt.to_string();
    }
    let mut out = String::with_capacity(prompt.len());
    let mut last = 0;
    for (range, _) in tags {
        out.push_str(&prompt[last..range.start]);
        last = range.end;
    }
    out.push_str(&prompt[last..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_found_and_removed() {
        let p = "a fox <lora:ink_style:0.7>, snow <lora:detail> <lora:bad:x>";
        assert_eq!(
            prompt_tags(p),
            vec![
                LoraTag {
                    name: "ink_style".into(),
                    weight: 0.7
                },
                LoraTag {
                    name: "detail".into(),
                    weight: 1.0
                }
            ]
        );
        assert_eq!(strip_tags(p), "a fox , snow <lora:bad:x>");
        assert_eq!(strip_tags("no tags  here"), "no tags  here");
    }
}
