//! The instance pool: where instances' memories come from, and how a
//! finished instance's memory is made clean for the next one.
//!
//! Every fresh instance takes a slot of wasmtime's pooling allocator, sized
//! here from the host's settings; `wasmtime serve`'s `-O` options adjust it
//! ([`PoolOptions`]). A slot goes from tenant to tenant, so resetting its
//! memory is what keeps one tenant's data out of the next one's instance.
//! Two ways to reset:
//!
//! - **decommit** (the default): the written pages are handed back to the
//!   kernel with `madvise`, in batches. Always complete. The next instance
//!   faults its pages in again, and on a machine running the host on
//!   several cores each first write to a page read before costs a TLB
//!   shootdown: most of a small guest's per-request cost (docs/profile.md).
//! - **in place** (`-O pooling-pagemap-scan`): the kernel's `PAGEMAP_SCAN`
//!   ioctl lists the pages the instance wrote; up to
//!   `-O pooling-memory-keep-resident` bytes of them are zeroed and stay
//!   mapped, the rest are decommitted. 1.7× the fresh-instance throughput
//!   here. Not the default: wasmtime 48 leaves a written page that is not in
//!   memory at that moment as it is (swapped out, or being moved by the
//!   kernel's compaction), so the next instance in the slot could read it
//!   (bytecodealliance/wasmtime#14357). [`reset_in_place`] turns it on
//!   only where the kernel has the ioctl and nothing can swap the pool out.

use std::path::Path;

use anyhow::{Result, bail};
use wasmtime::{Enabled, PoolingAllocationConfig};

/// How instances get their memory: `--no-pooling` and the `-O` options of
/// `wasmtime serve` that this host honours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Instances from a preallocated pool (fast) rather than on demand.
    pub pooling: bool,
    /// `-O pooling-KEY=N`: one of `POOL_KNOBS` (KEY without `pooling-`)
    /// over the sizes this host picks.
    pub overrides: Vec<(String, u64)>,
    /// `-O memory-init-cow=y`: memories initialized copy-on-write from the
    /// module's image (wasmtime's default) rather than by copying (ours).
    pub memory_init_cow: bool,
    /// `-W async-stack-zeroing[=y|n]`: stacks zeroed between uses
    /// (`run::runtime`). On by default here, unlike wasmtime: a pooled
    /// stack goes from tenant to tenant.
    pub stack_zeroing: bool,
    /// `-O pooling-pagemap-scan[=y|n|auto]`: reset memories in place
    /// (module docs). After `reset_in_place`, `Yes` or `No`.
    pub pagemap_scan: Enabled,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pooling: true,
            overrides: Vec::new(),
            memory_init_cow: false,
            stack_zeroing: true,
            pagemap_scan: Enabled::No,
        }
    }
}

/// Instances whose memories are decommitted together (`-O
/// pooling-decommit-batch-size` overrides it).
const DECOMMIT_BATCH: usize = 32;

/// Bytes at the top of a finished instance's async stack zeroed in place
/// (stacks are zeroed between uses, `run::runtime`); the rest is
/// decommitted with the memories' batch. Small on purpose: the memset
/// touches every page of it, used or not, and each pooled stack keeps
/// this much resident while idle (at 64 KiB, 600 instances of a burst kept
/// 37 MiB: front_door `memory_taken_by_a_burst_is_given_back`). `-O
/// pooling-async-stack-keep-resident` overrides it.
const STACK_KEEP_RESIDENT: usize = 16 << 10;

/// Written bytes of a finished instance's memory zeroed in place, when
/// memories are reset in place and `-O pooling-memory-keep-resident` does
/// not say otherwise. hello.wasm writes less than 32 KiB a request and got
/// the whole gain from that; a slot keeps at most this much resident while
/// unused, so the pool's idle memory stays under this times its slots.
const KEEP_RESIDENT_IN_PLACE: usize = 256 << 10;

/// The instance pool's configuration: sized for `concurrent` instances at
/// once of at most `memory_limit` bytes each, then the operator's knobs.
pub(crate) fn config(
    options: &PoolOptions,
    concurrent: u32,
    memory_limit: usize,
) -> PoolingAllocationConfig {
    let n = concurrent.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // A component is several core instances (the guest, its WASI shims); a
    // Rust guest uses 2-5, a JavaScript runtime more.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(10))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(memory_limit)
        // Reset tables by rewriting them rather than with madvise: the TLB
        // shootdowns madvise causes dominate a small guest's per-request
        // cost (measured with benches/compare.rs: hello goes from ~8.5k to
        // ~14k requests/s). Not for linear memories: a 1 MiB memset per
        // request measured as slow as the madvise it replaces.
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(STACK_KEEP_RESIDENT)
        // Decommit finished instances' memories in batches: one madvise
        // (and one round of TLB shootdowns across the cores) per batch
        // instead of per instance. Measured on the fresh-instance path
        // (hello.wasm, wrk -c16, 2 cores): 11.6k → 13.0k req/s at 16, 13.5k
        // at 64-128; a batch holds its instances' pages until it is full,
        // so after a burst at most this many instances stay resident until
        // traffic resumes (docs/profile.md).
        .decommit_batch_size(DECOMMIT_BATCH);
    if options.pagemap_scan == Enabled::Yes {
        // Without a size to keep, wasmtime would scan for nothing.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(kept_in_place(options));
    }
    for (key, value) in &options.overrides {
        apply_knob(&mut pool, key, *value);
    }
    pool
}

/// Written bytes of an instance's memory zeroed in place when memories
/// are: the operator's last `-O pooling-memory-keep-resident`, else
/// [`KEEP_RESIDENT_IN_PLACE`].
fn kept_in_place(options: &PoolOptions) -> usize {
    options
        .overrides
        .iter()
        .rfind(|(key, _)| key == "memory-keep-resident")
        .map_or(KEEP_RESIDENT_IN_PLACE, |(_, bytes)| {
            usize::try_from(*bytes).unwrap_or(usize::MAX)
        })
}

/// The pool knobs `wasmtime serve -O pooling-KEY=N` sets, by KEY.
pub(crate) const POOL_KNOBS: [&str; 19] = [
    "max-unused-warm-slots",
    "decommit-batch-size",
    "async-stack-keep-resident",
    "memory-keep-resident",
    "table-keep-resident",
    "total-component-instances",
    "max-component-instance-size",
    "max-core-instances-per-component",
    "max-memories-per-component",
    "max-tables-per-component",
    "total-memories",
    "total-tables",
    "total-stacks",
    "total-core-instances",
    "max-core-instance-size",
    "max-tables-per-module",
    "table-elements",
    "max-memories-per-module",
    "max-memory-size",
];

/// Sets one of `POOL_KNOBS` (others are ignored: the CLI refuses them).
fn apply_knob(pool: &mut PoolingAllocationConfig, key: &str, value: u64) {
    let count = u32::try_from(value).unwrap_or(u32::MAX);
    let size = usize::try_from(value).unwrap_or(usize::MAX);
    match key {
        "max-unused-warm-slots" => pool.max_unused_warm_slots(count),
        "decommit-batch-size" => pool.decommit_batch_size(size),
        "async-stack-keep-resident" => pool.async_stack_keep_resident(size),
        "memory-keep-resident" => pool.linear_memory_keep_resident(size),
        "table-keep-resident" => pool.table_keep_resident(size),
        "total-component-instances" => pool.total_component_instances(count),
        "max-component-instance-size" => pool.max_component_instance_size(size),
        "max-core-instances-per-component" => pool.max_core_instances_per_component(count),
        "max-memories-per-component" => pool.max_memories_per_component(count),
        "max-tables-per-component" => pool.max_tables_per_component(count),
        "total-memories" => pool.total_memories(count),
        "total-tables" => pool.total_tables(count),
        "total-stacks" => pool.total_stacks(count),
        "total-core-instances" => pool.total_core_instances(count),
        "max-core-instance-size" => pool.max_core_instance_size(size),
        "max-tables-per-module" => pool.max_tables_per_module(count),
        "table-elements" => pool.table_elements(size),
        "max-memories-per-module" => pool.max_memories_per_module(count),
        "max-memory-size" => pool.max_memory_size(size),
        _ => pool,
    };
}

/// Decides `-O pooling-pagemap-scan` on this machine: whether finished
/// instances' memories are reset in place (module docs). `y` fails the
/// start where it cannot be had; `auto` falls back to decommitting and
/// says why.
pub(crate) fn reset_in_place(options: &PoolOptions) -> Result<bool> {
    let asked = options.pagemap_scan;
    if asked == Enabled::No {
        return Ok(false);
    }
    let unavailable = if !options.pooling {
        Some("instances are not pooled (-O pooling-allocator=n or --no-pooling)".to_string())
    } else if !PoolingAllocationConfig::is_pagemap_scan_available() {
        Some("this kernel has no PAGEMAP_SCAN ioctl (Linux 6.7 or later has)".to_string())
    } else {
        swap_in_use().map(|swap| {
            format!(
                "{swap} can take an instance's written pages out of memory, and wasmtime 48 \
                 does not reset a page it finds swapped out: the next tenant in the slot would \
                 read it (bytecodealliance/wasmtime#14357). Turn swap off for this host (e.g. \
                 MemorySwapMax=0 in its systemd unit) to use it"
            )
        })
    };
    match (unavailable, asked) {
        (None, _) => {
            let keep = kept_in_place(options);
            tracing::warn!(
                "memories reset in place (-O pooling-pagemap-scan): up to {} KiB an instance \
                 zeroed and kept per pool slot. wasmtime 48 leaves a written page that the \
                 kernel is moving at that moment (memory compaction) as it is, so on rare \
                 occasions the next instance in the slot, maybe another tenant's, can read one \
                 page of the previous one (bytecodealliance/wasmtime#14357)",
                keep >> 10
            );
            Ok(true)
        }
        (Some(why), Enabled::Yes) => bail!("-O pooling-pagemap-scan=y: {why}"),
        (Some(why), _) => {
            tracing::info!(
                "-O pooling-pagemap-scan=auto: memories are decommitted, not reset in place: {why}"
            );
            Ok(false)
        }
    }
}

/// Swap this process's pages could go to, named; `None` when there is no
/// swap device or this process's cgroup may not swap.
fn swap_in_use() -> Option<String> {
    let Ok(swaps) = std::fs::read_to_string("/proc/swaps") else {
        return Some("swap that cannot be ruled out (/proc/swaps is unreadable)".into());
    };
    let device = swap_devices(&swaps).next()?;
    if cgroup_may_not_swap() {
        return None;
    }
    Some(format!("the swap device {device}"))
}

/// The devices in `/proc/swaps` (a header line, then one line each).
fn swap_devices(swaps: &str) -> impl Iterator<Item = &str> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
}

/// Whether this process's cgroup (v2) has `memory.swap.max` 0.
fn cgroup_may_not_swap() -> bool {
    let Ok(membership) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    let Some(path) = cgroup_v2_path(&membership) else {
        return false;
    };
    let file = Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("memory.swap.max");
    std::fs::read_to_string(file).is_ok_and(|max| max.trim() == "0")
}

/// The cgroup v2 path in `/proc/self/cgroup` (its `0::PATH` line).
fn cgroup_v2_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_devices_are_the_lines_after_the_header() {
        let none = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(swap_devices(none).count(), 0);
        let two = "Filename Type Size Used Priority\n/dev/zram0 partition 8388604 0 100\n\
                   /swapfile file 2097148 512 -2\n";
        assert_eq!(
            swap_devices(two).collect::<Vec<_>>(),
            ["/dev/zram0", "/swapfile"]
        );
    }

    #[test]
    fn the_cgroup_v2_line_names_the_path() {
        assert_eq!(
            cgroup_v2_path("0::/system.slice/mctx-host.service\n"),
            Some("/system.slice/mctx-host.service")
        );
        // cgroup v1 only: no unified hierarchy line.
        assert_eq!(cgroup_v2_path("12:memory:/user.slice\n"), None);
    }

    #[test]
    fn off_unless_asked_and_never_without_the_pool() {
        let asked = |pooling, pagemap_scan| PoolOptions {
            pooling,
            pagemap_scan,
            ..PoolOptions::default()
        };
        assert!(!reset_in_place(&asked(true, Enabled::No)).unwrap());
        assert!(!reset_in_place(&asked(false, Enabled::Auto)).unwrap());
        let refused = reset_in_place(&asked(false, Enabled::Yes)).unwrap_err();
        assert!(refused.to_string().contains("not pooled"), "{refused:#}");
    }

    #[test]
    fn in_place_reset_keeps_a_size_unless_the_operator_gives_one() {
        let on = PoolOptions {
            pagemap_scan: Enabled::Yes,
            ..PoolOptions::default()
        };
        let pool = config(&on, 4, 1 << 20);
        assert_eq!(pool.get_pagemap_scan(), Enabled::Yes);
        assert_eq!(pool.get_memory_keep_resident(), KEEP_RESIDENT_IN_PLACE);
        let given = PoolOptions {
            overrides: vec![("memory-keep-resident".into(), 4 << 20)],
            ..on
        };
        assert_eq!(
            config(&given, 4, 1 << 20).get_memory_keep_resident(),
            4 << 20
        );
        let off = config(&PoolOptions::default(), 4, 1 << 20);
        assert_eq!(off.get_pagemap_scan(), Enabled::No);
        assert_eq!(off.get_memory_keep_resident(), 0);
    }
}
