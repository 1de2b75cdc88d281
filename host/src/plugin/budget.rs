//! A plugin instance's memory budget: wasmtime asks before any linear
//! memory or table grows or is created, and this answers from totals over
//! the whole store, so a plugin cannot multiply its limit by declaring more
//! memories (wasmtime's own `StoreLimits` bounds each memory separately).

use wasmtime::ResourceLimiter;

/// Most linear memories one plugin instance may have. A Rust component has
/// one; the margin leaves room for other toolchains.
pub const MAX_MEMORIES: usize = 4;
/// Most tables one plugin instance may have (components add a few for
/// their adapters and shims).
pub const MAX_TABLES: usize = 16;
/// Most core module instances in one plugin instance.
pub const MAX_INSTANCES: usize = 32;
/// Most elements of all tables together; a table element costs the host a
/// pointer or two.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Why a component with `memories` linear memories and `tables` tables
/// (over all its core instances) cannot be a plugin, if it cannot. Checked
/// at load, so the refusal names the plugin's count and the cap instead of
/// a pool or store error at instantiation.
pub fn check_caps(memories: u32, tables: u32) -> Result<(), String> {
    let over = |n: u32, max: usize| usize::try_from(n).map_or(true, |n| n > max);
    if over(memories, MAX_MEMORIES) {
        return Err(format!(
            "it has {memories} linear memories over its core instances; a plugin may have at most {MAX_MEMORIES} (a Rust plugin has one), all within one budget (limits.memory_mib)"
        ));
    }
    if over(tables, MAX_TABLES) {
        return Err(format!(
            "it has {tables} tables over its core instances; a plugin may have at most {MAX_TABLES}"
        ));
    }
    Ok(())
}

/// Totals of one store, checked against its limits.
#[derive(Debug)]
pub struct Budget {
    memory_limit: usize,
    memory_bytes: usize,
    table_elements: usize,
}

impl Budget {
    /// A budget of `memory_limit` bytes of linear memory in all.
    pub fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_bytes: 0,
            table_elements: 0,
        }
    }

    /// Linear memory in use, summed over the store's memories.
    #[cfg(test)]
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_bytes.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit {
            // An error (not `false`) traps, so the plugin cannot carry on
            // after a refused grow and the crash names the cause.
            return Err(wasmtime::Error::msg(format!(
                "memory limit: growing to {total} bytes in all would exceed the plugin's {} bytes (limits.memory_mib)",
                self.memory_limit
            )));
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::msg(format!(
                "table limit: {total} table elements in all would exceed {MAX_TABLE_ELEMENTS}"
            )));
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_name_the_count_and_the_limit() {
        assert!(check_caps(1, 3).is_ok());
        let e = check_caps(9, 1).unwrap_err();
        assert!(e.contains("9 linear memories") && e.contains("at most 4"), "{e}");
        assert!(check_caps(1, 1000).unwrap_err().contains("1000 tables"));
    }

    #[test]
    fn memories_count_together_against_one_limit() {
        let mut b = Budget::new(100);
        assert!(b.memory_growing(0, 60, None).unwrap());
        // A second memory of 60 would be fine alone, not beside the first.
        assert!(b.memory_growing(0, 60, None).is_err());
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!(b.memory_bytes(), 100);
    }
}
