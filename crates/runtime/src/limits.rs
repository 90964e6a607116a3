//! The memory limiter: refuses growth past the function's memory size and records the
//! high-water mark that becomes the invocation's "max memory used".

use wasmtime::ResourceLimiter;

/// Tracks every linear memory of one instance as a single total.
///
/// The limit covers the sum of all memories, not each one: a component with two core
/// memories gets the function's memory size between them, which is what it is billed for.
pub(crate) struct MemoryLimiter {
    limit: usize,
    total: usize,
    peak: usize,
    refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            total: 0,
            peak: 0,
            refused: false,
        }
    }

    /// The largest total linear memory the instance held, in bytes.
    pub(crate) fn peak(&self) -> u64 {
        self.peak as u64
    }

    /// Whether a growth request was refused because of the limit.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.total - current.min(self.total) + desired;
        if grown > self.limit {
            self.refused = true;
            // Refusing (rather than trapping) lets a guest that checks for allocation failure
            // recover; one that does not will trap, and the invocation is then reported as
            // out of memory because `refused` is set.
            return Ok(false);
        }
        self.total = grown;
        self.peak = self.peak.max(grown);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table size is bounded by the pooling allocator's per-table element limit.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_limit_and_keeps_the_peak() {
        let mut limiter = MemoryLimiter::new(4 << 16);
        assert!(limiter.memory_growing(0, 2 << 16, None).unwrap());
        assert!(limiter.memory_growing(2 << 16, 4 << 16, None).unwrap());
        assert!(!limiter.memory_growing(4 << 16, 5 << 16, None).unwrap());
        assert!(limiter.refused());
        assert_eq!(limiter.peak(), 4 << 16);
    }

    #[test]
    fn counts_several_memories_against_one_limit() {
        let mut limiter = MemoryLimiter::new(3 << 16);
        assert!(limiter.memory_growing(0, 2 << 16, None).unwrap());
        assert!(!limiter.memory_growing(0, 2 << 16, None).unwrap());
        assert!(limiter.memory_growing(0, 1 << 16, None).unwrap());
        assert_eq!(limiter.peak(), 3 << 16);
    }
}
