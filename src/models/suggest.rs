//! "Did you mean": the known names closest to what was typed.

/// Up to three names within a small edit distance of `typed` (or starting with it), nearest
/// first; when one is a near miss, only the names about as near.
pub fn similar(typed: &str, names: &[String]) -> Vec<String> {
    let typed_l = typed.to_lowercase();
    let mut scored: Vec<(usize, bool, &String)> = names
        .iter()
        .filter_map(|n| {
            let l = n.to_lowercase();
            let d = strsim::damerau_levenshtein(&typed_l, &l);
            let limit = (typed_l.chars().count().max(l.chars().count()) / 3).max(2);
            let prefix = typed_l.len() >= 3 && l.starts_with(&typed_l);
            (d <= limit || prefix).then_some((d, prefix, n))
        })
        .collect();
    scored.sort();
    // A near miss (a typo) hides the merely similar names, not the ones it begins.
    if let Some(&(best, _, _)) = scored.first().filter(|(d, _, _)| *d <= 2) {
        scored.retain(|(d, prefix, _)| *d <= best + 1 || *prefix);
    }
    scored
        .into_iter()
        .take(3)
        .map(|(_, _, n)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_offered_and_far_ones_not() {
        let names: Vec<String> = ["sd15", "sdxl", "sdxl-turbo", "sd21-base", "mine"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(similar("sdxl-trubo", &names), vec!["sdxl-turbo"]);
        assert_eq!(similar("SD15", &names)[0], "sd15");
        assert!(similar("completely-different", &names).is_empty());
        assert!(similar("sd21", &names).contains(&"sd21-base".to_string()));
    }
}
