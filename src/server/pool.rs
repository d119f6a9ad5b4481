//! The per-worker pool of read buffers.
//!
//! A connection holds a read buffer only while it is actually reading a request; a parked
//! long-poll or an idle keep-alive connection gives its buffer back (the design budget is 512
//! bytes of user-space memory per parked connection). Recycling the buffers keeps that
//! take/give churn from turning into an allocation per request, while the two bounds keep the
//! pool itself from becoming the memory a burst leaves behind.

use std::fmt;

/// Hands out `Vec<u8>` read buffers with `capacity >= initial`; takes them back cleared. Keeps at
/// most `max_pooled` buffers; buffers that grew beyond `max_keep_capacity` are dropped, not kept.
pub struct BufPool {
    free: Vec<Vec<u8>>,
    /// Capacity of a fresh buffer, in bytes.
    initial: usize,
    /// Largest capacity, in bytes, a returned buffer may have and still be kept.
    max_keep_capacity: usize,
    /// Most buffers kept idle in the pool.
    max_pooled: usize,
}

impl BufPool {
    /// Creates an empty pool. `initial` is the capacity in bytes of each new buffer;
    /// `max_keep_capacity` (raised to at least `initial`) is the largest capacity in bytes a
    /// returned buffer may have and still be pooled; at most `max_pooled` idle buffers are kept.
    pub fn new(initial: usize, max_keep_capacity: usize, max_pooled: usize) -> Self {
        BufPool { free: Vec::new(), initial, max_keep_capacity: max_keep_capacity.max(initial), max_pooled }
    }

    /// An empty buffer with `capacity() >= initial`: a pooled one if available, else a new one.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(self.initial))
    }

    /// Returns a buffer. It is cleared and kept unless the pool is full or its capacity is
    /// outside `initial..=max_keep_capacity` (a grown buffer would pin its peak size forever;
    /// a shrunk one could not honour `take`'s promise), in which case it is freed.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if self.free.len() >= self.max_pooled || capacity > self.max_keep_capacity || capacity < self.initial {
            return;
        }
        buf.clear();
        self.free.push(buf);
    }

    /// Number of idle buffers currently held.
    #[cfg(test)]
    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("pooled", &self.free.len())
            .field("initial", &self.initial)
            .field("max_keep_capacity", &self.max_keep_capacity)
            .field("max_pooled", &self.max_pooled)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_gives_empty_buffers_of_at_least_initial_capacity() {
        let mut pool = BufPool::new(4096, 65536, 8);
        let buf = pool.take();
        assert!(buf.is_empty());
        assert!(buf.capacity() >= 4096);
        assert_eq!(pool.pooled(), 0);
    }

    #[test]
    fn returned_buffers_are_cleared_and_reused() {
        let mut pool = BufPool::new(64, 1024, 8);
        let mut buf = pool.take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let ptr = buf.as_ptr();
        pool.give(buf);
        assert_eq!(pool.pooled(), 1);
        let again = pool.take();
        assert!(again.is_empty(), "old request bytes must not leak into the next one");
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        assert_eq!(pool.pooled(), 0);
    }

    #[test]
    fn grown_buffers_are_dropped() {
        let mut pool = BufPool::new(64, 1024, 8);
        let mut buf = pool.take();
        buf.resize(4096, b'x');
        pool.give(buf);
        assert_eq!(pool.pooled(), 0);
        // Exactly at the bound is still kept.
        pool.give(Vec::with_capacity(1024));
        assert_eq!(pool.pooled(), 1);
    }

    #[test]
    fn small_foreign_buffers_are_not_pooled() {
        let mut pool = BufPool::new(64, 1024, 8);
        pool.give(Vec::new());
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.pooled(), 0);
        for _ in 0..3 {
            assert!(pool.take().capacity() >= 64);
        }
    }

    #[test]
    fn pool_size_is_bounded() {
        let mut pool = BufPool::new(16, 16, 3);
        let bufs: Vec<Vec<u8>> = (0..5).map(|_| pool.take()).collect();
        for buf in bufs {
            pool.give(buf);
        }
        assert_eq!(pool.pooled(), 3);
        let mut zero = BufPool::new(16, 16, 0);
        zero.give(Vec::with_capacity(16));
        assert_eq!(zero.pooled(), 0);
    }

    #[test]
    fn keep_bound_below_initial_is_raised() {
        let mut pool = BufPool::new(256, 16, 4);
        let buf = pool.take();
        pool.give(buf);
        assert_eq!(pool.pooled(), 1);
    }
}
