//! The images a `response_format: "url"` answer points at: kept in memory for a limited time and
//! within a byte budget (the oldest go first), then gone (404). The caller names each image and
//! says what time it is, so the rules are tested without waiting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Files {
    ttl: Duration,
    budget: usize,
    /// Oldest first.
    items: VecDeque<(String, Instant, Arc<[u8]>)>,
    bytes: usize,
}

impl Files {
    /// Images live `ttl`; together they keep at most `budget` bytes (the newest is kept even
    /// when it alone is larger).
    pub fn new(ttl: Duration, budget: usize) -> Self {
        Self { ttl, budget, items: VecDeque::new(), bytes: 0 }
    }

    /// Keeps `png` as `id`, made at `now`.
    pub fn put(&mut self, id: String, png: Vec<u8>, now: Instant) {
        self.prune(now);
        self.bytes += png.len();
        self.items.push_back((id, now, png.into()));
        while self.bytes > self.budget && self.items.len() > 1 {
            self.drop_oldest();
        }
    }

    /// The image `id`, while it lives.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Arc<[u8]>> {
        self.prune(now);
        self.items.iter().find(|(i, _, _)| i == id).map(|(_, _, png)| png.clone())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn prune(&mut self, now: Instant) {
        while self.items.front().is_some_and(|(_, at, _)| now.duration_since(*at) >= self.ttl) {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, _, png)) = self.items.pop_front() {
            self.bytes -= png.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_served_until_its_time_is_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = Files::new(s(60), 1 << 20);
        f.put("a".into(), vec![1; 10], t0);
        f.put("b".into(), vec![2; 10], t0 + s(30));
        assert_eq!(f.get("a", t0 + s(59)).as_deref(), Some(&[1u8; 10][..]));
        assert_eq!(f.get("a", t0 + s(60)), None, "a minute after it was made");
        assert_eq!(f.get("b", t0 + s(60)).as_deref(), Some(&[2u8; 10][..]));
        assert_eq!(f.get("b", t0 + s(90)), None);
        assert!(f.is_empty(), "expired images free their memory");
        assert_eq!(f.get("never", t0), None);
    }

    #[test]
    fn over_the_budget_the_oldest_go_first_and_the_newest_stays() {
        let t0 = Instant::now();
        let mut f = Files::new(Duration::from_secs(600), 25);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            f.put(id.into(), vec![0; 10], t0 + Duration::from_secs(i as u64));
        }
        let at = t0 + Duration::from_secs(5);
        assert_eq!((f.get("a", at), f.len()), (None, 2), "30 bytes over a budget of 25");
        assert!(f.get("b", at).is_some() && f.get("c", at).is_some());
        f.put("big".into(), vec![0; 100], at);
        assert_eq!(f.len(), 1, "only the newest, larger than the budget alone");
        assert!(f.get("big", at).is_some());
    }
}
