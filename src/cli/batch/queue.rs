//! Which image each worker renders next. Images are grouped by what a worker must load for
//! them (model and LoRAs); a worker keeps to its group while it has images, then moves to the
//! largest group no other worker is on, and only then helps with a busy one. So each model
//! loads at most once per worker, and several workers spread over the groups first.
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Queue {
    /// Group key and the images left in it, in plan order.
    groups: Vec<(String, VecDeque<usize>)>,
}

impl Queue {
    /// `items`: (image, group key), in plan order.
    pub fn new(items: impl IntoIterator<Item = (usize, String)>) -> Self {
        let mut groups: Vec<(String, VecDeque<usize>)> = Vec::new();
        for (image, key) in items {
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push_back(image),
                None => groups.push((key, VecDeque::from([image]))),
            }
        }
        Self { groups }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|(_, l)| l.is_empty())
    }

    pub fn len(&self) -> usize {
        self.groups.iter().map(|(_, l)| l.len()).sum()
    }

    /// The next image for a worker that has `current` loaded, while other workers are on
    /// `others`; with its group key.
    pub fn next(&mut self, current: Option<&str>, others: &[&str]) -> Option<(usize, String)> {
        let pick = |groups: &[(String, VecDeque<usize>)], free_only: bool| {
            groups
                .iter()
                .enumerate()
                .filter(|(_, (k, l))| {
                    let busy = free_only && others.contains(&k.as_str());
                    !l.is_empty() && !busy
                })
                // The largest; the earliest in the plan among equals.
                .max_by_key(|(i, (_, l))| (l.len(), std::cmp::Reverse(*i)))
                .map(|(i, _)| i)
        };
        let index = current
            .and_then(|c| {
                self.groups
                    .iter()
                    .position(|(k, l)| k == c && !l.is_empty())
            })
            .or_else(|| pick(&self.groups, true))
            .or_else(|| pick(&self.groups, false))?;
        let (key, list) = &mut self.groups[index];
        list.pop_front().map(|image| (image, key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(keys: &[&str]) -> Queue {
        Queue::new(keys.iter().enumerate().map(|(i, k)| (i, k.to_string())))
    }

    #[test]
    fn one_worker_loads_each_model_once() {
        let mut q = queue(&["a", "b", "a", "b", "c", "a"]);
        assert_eq!(q.len(), 6);
        let mut current: Option<String> = None;
        let mut order = Vec::new();
        let mut loads = Vec::new();
        while let Some((image, key)) = q.next(current.as_deref(), &[]) {
            if current.as_deref() != Some(&key) {
                loads.push(key.clone());
                current = Some(key);
            }
            order.push(image);
        }
        assert_eq!(loads, ["a", "b", "c"]);
        assert_eq!(order, [0, 2, 5, 1, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn workers_spread_over_groups_then_share() {
        let mut q = queue(&["a", "a", "a", "b"]);
        let (_, first) = q.next(None, &[]).unwrap();
        assert_eq!(first, "a");
        let (_, second) = q.next(None, &["a"]).unwrap();
        assert_eq!(second, "b", "a free group before a busy one");
        // Worker 2 finished b: it helps with a.
        let (image, key) = q.next(Some("b"), &["a"]).unwrap();
        assert_eq!((image, key.as_str()), (1, "a"));
        let single = &mut queue(&["m", "m"]);
        assert_eq!(single.next(None, &[]).unwrap().0, 0);
        assert_eq!(single.next(None, &["m"]).unwrap().0, 1);
        assert!(single.next(None, &["m"]).is_none());
    }
}
