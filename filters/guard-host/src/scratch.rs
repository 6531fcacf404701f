//! Scan scratch (regex caches, buffers) shared by every stream of a VM. A VM runs one callback
//! at a time and a scan finishes inside one, so one scratch per compiled engine is enough; it is
//! created on first use and reused, never per request or per chunk.

use std::cell::RefCell;

/// Most engines whose scratch a VM keeps (one per policy; more only after reconfigures).
pub const MAX_SCRATCH: usize = 16;

/// Scratch values keyed by the address of the engine they belong to.
pub struct ScratchPool<S> {
    all: RefCell<Vec<(usize, S)>>,
}

impl<S> Default for ScratchPool<S> {
    fn default() -> Self {
        ScratchPool {
            all: RefCell::new(Vec::new()),
        }
    }
}

impl<S> ScratchPool<S> {
    /// Run `f` with the scratch of engine `key` (made by `make` on first use).
    pub fn with<R>(&self, key: usize, make: impl Fn() -> S, f: impl FnOnce(&mut S) -> R) -> R {
        let Ok(mut all) = self.all.try_borrow_mut() else {
            // Not reachable (no re-entrancy in a VM); stay correct with a fresh scratch.
            return f(&mut make());
        };
        if !all.iter().any(|(k, _)| *k == key) {
            if all.len() >= MAX_SCRATCH {
                all.clear();
            }
            all.push((key, make()));
        }
        match all.iter_mut().find(|(k, _)| *k == key) {
            Some((_, s)) => f(s),
            None => f(&mut make()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_per_key_and_stays_bounded() {
        let pool: ScratchPool<Vec<u8>> = ScratchPool::default();
        pool.with(1, Vec::new, |s| s.push(1));
        pool.with(1, Vec::new, |s| s.push(2));
        assert_eq!(pool.with(1, Vec::new, |s| s.clone()), vec![1, 2]);
        for k in 2..=(MAX_SCRATCH + 1) {
            pool.with(k, Vec::new, |s| s.push(0));
        }
        assert!(pool.all.borrow().len() <= MAX_SCRATCH);
    }
}
