//! The committed fixtures stay small (issue #2: under 15 MB); anything bigger is made at test time
//! into the per-user cache (scripts/make-fixtures --cached-references).
use std::path::Path;

fn size(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| size(&e.unwrap().path()))
            .sum()
    } else {
        meta.len()
    }
}

#[test]
fn committed_fixtures_stay_under_15_mb() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bytes = size(&fixtures);
    assert!(
        bytes < 15_000_000,
        "tests/fixtures holds {bytes} bytes; move the biggest references to the cached set in scripts/fixtures/make.py"
    );
}
