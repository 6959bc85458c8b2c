//! One start shared by every request that needs it: while the work for a key runs, later callers
//! for the same key wait for its result instead of starting it again (two requests for a stopped
//! model cause one start). When it ends the key is free, and the next caller runs it anew. A
//! caller whose work is dropped half-way (its client went away) hands the work to one of the
//! waiters, so nobody waits for a start that nobody is making.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type Slots<K, T> = Arc<Mutex<HashMap<K, watch::Receiver<Option<T>>>>>;

pub struct Once<K, T> {
    running: Slots<K, T>,
}

impl<K, T> Default for Once<K, T> {
    fn default() -> Self {
        Self { running: Arc::new(Mutex::new(HashMap::new())) }
    }
}

impl<K, T> Clone for Once<K, T> {
    fn clone(&self) -> Self {
        Self { running: self.running.clone() }
    }
}

/// Frees the key when the caller doing the work ends, finished or dropped.
struct Free<K: Eq + Hash, T> {
    running: Slots<K, T>,
    key: K,
}

impl<K: Eq + Hash, T> Drop for Free<K, T> {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl<K: Eq + Hash + Clone, T: Clone> Once<K, T> {
    /// The result of `work` for `key`: run here when nothing runs for `key`, else the running
    /// one's result.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut work = Some(work);
        loop {
            let (tx, mut rx) = {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                match running.get(&key) {
                    Some(rx) => (None, rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        running.insert(key.clone(), rx.clone());
                        (Some(tx), rx)
                    }
                }
            };
            if let Some(tx) = tx {
                let _free = Free { running: self.running.clone(), key: key.clone() };
                let make = work.take().expect("runs the work at most once");
                let value = make().await;
                let _ = tx.send(Some(value.clone()));
                return value;
            }
            // Waiting: for the result, or for the one making it to be dropped (then try again,
            // and maybe make it here).
            let got = rx.wait_for(Option::is_some).await.map(|v| v.clone());
            if let Ok(Some(v)) = got {
                return v;
            }
        }
    }

    /// Whether work for `key` is running now.
    pub fn is_running(&self, key: &K) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    async fn start(once: &Once<&'static str, u32>, key: &'static str, starts: &AtomicU32) -> u32 {
        once.run(key, || async {
            let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            n
        })
        .await
    }

    #[tokio::test]
    async fn callers_that_arrive_while_it_runs_share_one_run() {
        let once = Once::default();
        let starts = AtomicU32::new(0);
        let all: Vec<u32> =
            futures_util::future::join_all((0..8).map(|_| start(&once, "a", &starts))).await;
        assert_eq!(all, [1; 8], "every caller got the one start's result");
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(!once.is_running(&"a"));
        // Once it ended, the next caller starts anew.
        assert_eq!(start(&once, "a", &starts).await, 2);
    }

    #[tokio::test]
    async fn other_keys_run_on_their_own() {
        let once = Once::default();
        let starts = AtomicU32::new(0);
        let (a, b) = tokio::join!(start(&once, "a", &starts), start(&once, "b", &starts));
        assert_ne!(a, b);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dropped_caller_hands_the_work_to_one_that_waits() {
        let once: Once<&str, u32> = Once::default();
        let starts = Arc::new(AtomicU32::new(0));
        let first = {
            let (once, starts) = (once.clone(), starts.clone());
            tokio::spawn(async move {
                once.run("a", || async {
                    starts.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<u32>().await
                })
                .await
            })
        };
        while !once.is_running(&"a") {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let (once, starts) = (once.clone(), starts.clone());
            tokio::spawn(async move {
                once.run("a", || async { starts.fetch_add(1, Ordering::SeqCst) + 1 }).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "it waits for the running start");
        first.abort();
        let got = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the waiter does not hang on a start nobody makes")
            .unwrap();
        assert_eq!((got, starts.load(Ordering::SeqCst)), (2, 2), "it made the start itself");
        assert!(!once.is_running(&"a"));
    }
}
