//! Which seeds a job renders: a list, a range `"A..B"` (end exclusive, as Rust and Python
//! ranges), or `count = N` random seeds (drawn once and recorded in the output folder, so a
//! rerun renders the same images).
use toml::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSpec {
    List(Vec<u64>),
    /// N seeds drawn at random the first time the plan runs into an output folder.
    Random(u32),
}

impl SeedSpec {
    /// `[1, 2, 3]` or `"100..108"`; at most `max` seeds.
    pub fn from_toml(v: &Value, max: usize) -> Result<Self, String> {
        let seeds = match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::Integer(n) => u64::try_from(*n)
                        .map_err(|_| format!("seeds must be whole numbers of 0 or more, got {n}")),
                    other => Err(format!(
                        "seeds must be whole numbers, got {}",
                        other.type_str()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Value::String(s) => range(s, max)?,
            other => {
                return Err(format!(
                "seeds must be a list such as [1, 2, 3] or a range such as \"100..108\", got {}",
                other.type_str()
            ))
            }
        };
        if seeds.is_empty() {
            return Err("seeds is empty: list at least one seed".into());
        }
        if seeds.len() > max {
            return Err(format!(
                "seeds asks for {} images, more than {max} in one job: split it into several jobs",
                seeds.len()
            ));
        }
        Ok(Self::List(seeds))
    }
}

fn range(s: &str, max: usize) -> Result<Vec<u64>, String> {
    let bad = || {
        format!("seeds = {s:?} is not a range: write \"A..B\" (B excluded), such as \"100..108\"")
    };
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    if b.starts_with('=') {
        return Err(format!(
            "seeds = {s:?}: ranges leave their end out (\"A..B\"); write \"{a}..{}\" to include it",
            b.trim_start_matches('=')
                .trim()
                .parse::<u64>()
                .map_or("B+1".into(), |e| (e + 1).to_string())
        ));
    }
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b <= a {
        return Err(format!(
            "seeds = {s:?} is empty: the end is excluded, so it must be above the start"
        ));
    }
    if b - a > max as u64 {
        return Err(format!(
            "seeds = {s:?} asks for {} images, more than {max} in one job: split it into several jobs",
            b - a
        ));
    }
    Ok((a..b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_value: &str) -> Result<SeedSpec, String> {
        let t: toml::Table = toml::from_str(&format!("v = {toml_value}")).unwrap();
        SeedSpec::from_toml(&t["v"], 100)
    }

    #[test]
    fn lists_and_ranges() {
        assert_eq!(spec("[3, 1, 2]"), Ok(SeedSpec::List(vec![3, 1, 2])));
        assert_eq!(
            spec("\"100..104\""),
            Ok(SeedSpec::List(vec![100, 101, 102, 103]))
        );
        assert_eq!(spec("\" 7 .. 8 \""), Ok(SeedSpec::List(vec![7])));
        for (bad, word) in [
            ("\"5..5\"", "empty"),
            ("\"9..2\"", "empty"),
            ("\"1..=3\"", "\"1..4\""),
            ("\"a..b\"", "not a range"),
            ("\"0..1000\"", "more than 100"),
            ("[]", "empty"),
            ("[1.5]", "whole numbers"),
            ("[-1]", "0 or more"),
            ("7", "a list"),
        ] {
            let err = spec(bad).unwrap_err();
            assert!(err.contains(word), "{bad}: {err}");
        }
    }
}
