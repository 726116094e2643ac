//! The BPE model: symbols of a byte-level word merged by rank, as the `tokenizers` library does
//! with CLIP's settings (no subword prefix, `</w>` on the last symbol, no unknown-fusing).
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// Marks the last symbol of a word; merges and vocabulary entries carry it.
pub const END_OF_WORD: &str = "</w>";

/// Words cached before the cache is emptied: bounds memory on endless streams of new words.
const CACHE_LIMIT: usize = 50_000;

pub struct Bpe {
    vocab: HashMap<String, i64>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(i64, i64), (u32, i64)>,
    unk: Option<i64>,
    cache: Mutex<HashMap<String, Vec<i64>>>,
}

/// A merge that failed to resolve against the vocabulary, for the loader to report.
#[derive(Debug)]
pub struct BadMerge {
    pub line: usize,
    pub missing: String,
}

impl Bpe {
    /// `merges` in rank order, each with the 1-based line it came from (for error messages).
    pub fn new(
        vocab: HashMap<String, i64>,
        merges: &[(usize, String, String)],
        unk_token: Option<&str>,
    ) -> Result<Self, BadMerge> {
        let mut table = HashMap::with_capacity(merges.len());
        for (rank, (line, a, b)) in merges.iter().enumerate() {
            let id = |token: &str| {
                vocab.get(token).copied().ok_or_else(|| BadMerge {
                    line: *line,
                    missing: token.to_string(),
                })
            };
            let merged = format!("{a}{b}");
            // A later duplicate overrides an earlier one, as in `tokenizers`.
            table.insert((id(a)?, id(b)?), (rank as u32, id(&merged)?));
        }
        let unk = unk_token.and_then(|t| vocab.get(t).copied());
        Ok(Bpe {
            vocab,
            merges: table,
            unk,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.vocab.get(token).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Ids of one pre-tokenized, byte-level-mapped word.
    pub fn word(&self, word: &str, out: &mut Vec<i64>) {
        if let Some(ids) = self.cache_lock().get(word) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge_word(word);
        out.extend_from_slice(&ids);
        let mut cache = self.cache_lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(word.to_string(), ids);
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<i64>>> {
        // The cache holds no invariant a panicking thread could break: keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn merge_word(&self, word: &str) -> Vec<i64> {
        let mut symbols = self.initial_symbols(word);
        // Lowest rank first, then leftmost: what `tokenizers`' priority queue pops.
        let mut queue = BinaryHeap::new();
        for pos in 0..symbols.len().saturating_sub(1) {
            if let Some(&(rank, id)) = self.merges.get(&(symbols[pos].id, symbols[pos + 1].id)) {
                queue.push(Reverse((rank, pos, id)));
            }
        }
        while let Some(Reverse((_, pos, new_id))) = queue.pop() {
            let Some(next) = symbols[pos].next.filter(|_| symbols[pos].alive) else {
                continue;
            };
            // Entries go stale when a neighbour merged first; the pair must still make this id.
            let current = self.merges.get(&(symbols[pos].id, symbols[next].id));
            if current.map(|&(_, id)| id) != Some(new_id) {
                continue;
            }
            symbols[pos].id = new_id;
            symbols[pos].next = symbols[next].next;
            symbols[next].alive = false;
            if let Some(after) = symbols[next].next {
                symbols[after].prev = Some(pos);
            }
            if let Some(prev) = symbols[pos].prev {
                if let Some(&(rank, id)) = self.merges.get(&(symbols[prev].id, new_id)) {
                    queue.push(Reverse((rank, prev, id)));
                }
            }
            if let Some(after) = symbols[pos].next {
                if let Some(&(rank, id)) = self.merges.get(&(new_id, symbols[after].id)) {
                    queue.push(Reverse((rank, pos, id)));
                }
            }
        }
        symbols.iter().filter(|s| s.alive).map(|s| s.id).collect()
    }

    /// One symbol per character, the last with the end-of-word suffix; characters missing
    /// from the vocabulary become the unknown token one by one (or vanish without one).
    fn initial_symbols(&self, word: &str) -> Vec<Symbol> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        let mut chars = word.char_indices().peekable();
        let mut text = String::new();
        while let Some((_, c)) = chars.next() {
            text.clear();
            text.push(c);
            if chars.peek().is_none() {
                text.push_str(END_OF_WORD);
            }
            let Some(id) = self.vocab.get(&text).copied().or(self.unk) else {
                continue;
            };
            let pos = symbols.len();
            symbols.push(Symbol {
                id,
                prev: pos.checked_sub(1),
                next: None,
                alive: true,
            });
            if pos > 0 {
                symbols[pos - 1].next = Some(pos);
            }
        }
        symbols
    }
}

struct Symbol {
    id: i64,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

/// CLIP's reversible byte -> printable character table (the order gives the first 256 ids).
pub fn byte_symbols() -> [char; 256] {
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut shifted = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// The byte symbols in CLIP's vocabulary order: printable bytes first, then the rest.
pub fn byte_symbols_in_vocab_order() -> Vec<char> {
    let table = byte_symbols();
    let mut order: Vec<u8> = (0..=255u8)
        .filter(|&b| table[b as usize] as u32 == u32::from(b))
        .collect();
    order.extend((0..=255u8).filter(|&b| table[b as usize] as u32 != u32::from(b)));
    order.into_iter().map(|b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_symbols_are_distinct_and_printable_bytes_map_to_themselves() {
        let table = byte_symbols();
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[b' ' as usize], '\u{120}');
        assert_eq!(byte_symbols_in_vocab_order()[0], '!');
    }

    #[test]
    fn merges_apply_by_rank_not_position() {
        let tokens = ["a", "b", "c", "c</w>", "bc</w>", "ab", "abc</w>", "a</w>"];
        let vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as i64))
            .collect();
        let m = |a: &str, b: &str| (1, a.to_string(), b.to_string());
        let bpe = Bpe::new(
            vocab,
            &[m("b", "c</w>"), m("a", "b"), m("a", "bc</w>")],
            None,
        )
        .unwrap();
        let mut out = vec![];
        bpe.word("abc", &mut out);
        assert_eq!(out, vec![6]);
        out.clear();
        bpe.word("aa", &mut out);
        assert_eq!(out, vec![0, 7]);
    }
}
