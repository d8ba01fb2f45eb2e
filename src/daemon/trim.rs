//! Letting go of start-up code.
//!
//! Most of the daemon's code runs once: argument parsing, configuration loading, migrations,
//! recovery. Its pages stay mapped afterwards (and, through the kernel's fault-around, so do their
//! neighbours), so an idle daemon would appear to hold its whole binary. Once start-up is over,
//! and whenever housekeeping finds it idle, the daemon advises the kernel that the file-backed
//! pages of its own binary may be reclaimed from its mapping (`MADV_PAGEOUT`). They are clean: they
//! stay in the page cache, and any that is needed again comes back with a minor fault. Nothing
//! anonymous (heap, stacks, SQLite's cache) is touched.

/// Pages out the file-backed mappings of our own executable. Best effort; returns bytes advised.
pub fn release_code_pages() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = parts.nth(3).unwrap_or("");
        if std::path::Path::new(path) != exe || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: a range of our own read-only, file-backed mapping, taken from /proc/self/maps;
        // MADV_PAGEOUT only drops clean pages from this process's mapping, it does not unmap it.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc == 0 {
            advised += end - start;
        }
    }
    advised
}

/// Keeps the allocator from handing memory back to the kernel after every burst: under load the
/// heap's top grows and shrinks many times a second (SQLite's page cache, response buffers),
/// and every regrowth costs page faults — a quarter of the daemon's time when in-process steps
/// run back to back. Freed memory at the top is kept up to `KEEP` (and grown `PAD` at a time);
/// [`release_heap`] gives it back once the daemon is idle.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const KEEP: libc::c_int = 32 << 20;
        const PAD: libc::c_int = 1 << 20;
        // SAFETY: mallopt only sets glibc allocator parameters; called before other threads
        // allocate heavily, and it is thread-safe in glibc anyway.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
            libc::mallopt(libc::M_TOP_PAD, PAD);
        }
    }
}

/// Returns free heap memory to the kernel (when idle: see [`tune_allocator`]).
pub fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}
