//! Jobs that run as someone else, within limits: `user`, `group`, `nice` and `limits`.
//!
//! Everything is decided in the parent, before the fork: whether worker may switch to the job's
//! user at all, whether it may raise a limit or lower the niceness, and the exact values to set.
//! The child, between fork and exec, only makes async-signal-safe system calls on those values
//! (no allocation, no user database lookup): `setrlimit` for each limit, `setpriority`, then
//! `setgroups`, `setgid`, `setuid` — in that order, because each step needs the privileges the
//! next one gives up.
//!
//! Jobs without any of these settings never get here: they keep the `posix_spawn` path (see
//! [`super::Executor`]), which a pre-exec hook would turn into a full fork.

use std::io;
use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};

use super::Exit;
use crate::config::job::{Identity, Limits};
use crate::units::{format_duration_spec, format_size_spec};

/// How far the hard CPU limit lies beyond the soft one: the job gets SIGXCPU first (which it may
/// catch to clean up), then SIGKILL this many seconds of CPU time later.
pub const CPU_KILL_AFTER_SECS: u64 = 5;

/// What worker itself may do, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// Effective uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// Effective capabilities: CAP_SETUID, CAP_SETGID, CAP_KILL (signal another user's
    /// processes: stop and sweep the job's group), CAP_SYS_NICE, CAP_SYS_RESOURCE.
    pub setuid: bool,
    pub setgid: bool,
    pub kill: bool,
    pub sys_nice: bool,
    pub sys_resource: bool,
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_KILL: u32 = 5;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_RESOURCE: u32 = 24;

impl Privileges {
    /// Worker's own, read once (they do not change while it runs).
    pub fn current() -> Privileges {
        static CURRENT: OnceLock<Privileges> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let uid = nix::unistd::geteuid().as_raw();
            let gid = nix::unistd::getegid().as_raw();
            // Without /proc, assume the classic rule: root may do everything, others nothing.
            let caps = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| effective_caps(&s))
                .unwrap_or(if uid == 0 { u64::MAX } else { 0 });
            Privileges::from_caps(uid, gid, caps)
        })
    }

    /// From an effective capability mask (`CapEff` of `/proc/PID/status`).
    pub fn from_caps(uid: u32, gid: u32, caps: u64) -> Privileges {
        let has = |cap: u32| caps & (1 << cap) != 0;
        Privileges {
            uid,
            gid,
            setuid: has(CAP_SETUID),
            setgid: has(CAP_SETGID),
            kill: has(CAP_KILL),
            sys_nice: has(CAP_SYS_NICE),
            sys_resource: has(CAP_SYS_RESOURCE),
        }
    }
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Whether the child must change its credentials (`setgroups`, `setgid`, `setuid`), or why the
/// job cannot run as asked. Asking for worker's own uid and gid is fine without privileges (there
/// is nothing to change); anything else needs them.
pub fn switch_needed(identity: &Identity, me: &Privileges) -> Result<bool, String> {
    let may_switch_users = me.setuid && me.setgid && me.kill;
    if let Some(user) = identity.user.as_ref().filter(|u| u.uid != me.uid) {
        if may_switch_users {
            return Ok(true);
        }
        return Err(if me.uid == 0 {
            format!(
                "cannot run as user `{}`: worker runs as root but without CAP_SETUID, CAP_SETGID and CAP_KILL, which switching users needs",
                user.name
            )
        } else {
            format!(
                "cannot run as user `{}`: worker runs as uid {}, and only root can switch users (or a worker given CAP_SETUID, CAP_SETGID and CAP_KILL)",
                user.name, me.uid
            )
        });
    }
    if identity.gid != me.gid {
        if me.setgid {
            return Ok(true);
        }
        return Err(format!(
            "cannot run as group `{}`: worker runs as gid {}, and only root can switch groups (or a worker given CAP_SETGID)",
            identity.group_name, me.gid
        ));
    }
    // Worker's own user and group: set the user's supplementary groups exactly when allowed,
    // else there is nothing to change.
    Ok(match identity.user {
        Some(_) => may_switch_users,
        None => me.setgid,
    })
}

/// One resource limit to set: which, the soft and hard values, and how to name it in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rlimit {
    resource: Resource,
    soft: u64,
    hard: u64,
    field: &'static str,
}

impl Rlimit {
    /// A limit value as the user would write it.
    fn show(&self, v: u64) -> String {
        match self.resource {
            Resource::RLIMIT_DATA => format_size_spec(v),
            Resource::RLIMIT_CPU => format!("{v}s"),
            _ => v.to_string(),
        }
    }
}

/// The rlimits `limits` asks for (soft = hard, except the CPU time's hard limit).
fn rlimits(limits: &Limits) -> Vec<Rlimit> {
    let mut out = Vec::new();
    let mut push = |resource, soft, hard, field| {
        out.push(Rlimit {
            resource,
            soft,
            hard,
            field,
        })
    };
    if let Some(m) = limits.memory {
        push(Resource::RLIMIT_DATA, m, m, "memory");
    }
    if let Some(s) = limits.cpu_seconds() {
        push(
            Resource::RLIMIT_CPU,
            s,
            s.saturating_add(CPU_KILL_AFTER_SECS),
            "cpu_time",
        );
    }
    if let Some(n) = limits.open_files {
        push(Resource::RLIMIT_NOFILE, n, n, "open_files");
    }
    if let Some(n) = limits.processes {
        push(Resource::RLIMIT_NPROC, n, n, "processes");
    }
    out
}

/// Why a hard limit cannot be set: raising one above worker's own needs CAP_SYS_RESOURCE.
fn raise_problem(limit: &Rlimit, current_hard: u64, me: &Privileges) -> Option<String> {
    (limit.hard > current_hard && !me.sys_resource).then(|| {
        format!(
            "limits.{} needs a hard limit of {}, above worker's own ({}), and only root can raise it (or a worker given CAP_SYS_RESOURCE)",
            limit.field,
            limit.show(limit.hard),
            limit.show(current_hard)
        )
    })
}

/// Whether a process at niceness `current` may set `wanted`: raising it is always allowed,
/// lowering it needs CAP_SYS_NICE or an RLIMIT_NICE soft limit of at least `20 - wanted`.
fn nice_allowed(wanted: i32, current: i32, rlimit_nice: u64, me: &Privileges) -> bool {
    wanted >= current || me.sys_nice || i64::from(20 - wanted) <= rlimit_nice.min(40) as i64
}

/// The credentials the child takes on.
#[derive(Debug)]
struct Switch {
    /// Supplementary groups; `None` keeps worker's (only `group:` was given).
    groups: Option<Vec<Gid>>,
    gid: Gid,
    /// `None` keeps worker's user (only `group:` was given).
    uid: Option<Uid>,
}

/// What the child of a job with `user`, `group`, `nice` or `limits` does between fork and exec,
/// computed in the parent.
#[derive(Debug)]
pub struct ChildSetup {
    rlimits: Vec<Rlimit>,
    nice: Option<i32>,
    switch: Option<Switch>,
}

impl ChildSetup {
    /// The setup for a job, `None` when it has none of these settings (it keeps posix_spawn),
    /// or why the job cannot be started as configured.
    pub fn plan(
        identity: Option<&Identity>,
        limits: &Limits,
    ) -> Result<Option<ChildSetup>, String> {
        if identity.is_none() && limits.is_empty() {
            return Ok(None);
        }
        let me = Privileges::current();
        let rlimits = rlimits(limits);
        for limit in &rlimits {
            let (_, current_hard) = getrlimit(limit.resource)
                .map_err(|e| format!("cannot read worker's own limits: {e}"))?;
            if let Some(problem) = raise_problem(limit, current_hard, &me) {
                return Err(problem);
            }
        }
        if let Some(wanted) = limits.nice {
            let current = own_niceness()?;
            let (rlimit_nice, _) = getrlimit(Resource::RLIMIT_NICE)
                .map_err(|e| format!("cannot read worker's own limits: {e}"))?;
            if !nice_allowed(wanted, current, rlimit_nice, &me) {
                return Err(format!(
                    "nice {wanted} is below worker's own niceness ({current}), and only root can lower it (or a worker given CAP_SYS_NICE)"
                ));
            }
        }
        let switch = match identity {
            Some(id) if switch_needed(id, &me)? => Some(Switch {
                groups: id
                    .user
                    .as_ref()
                    .map(|u| u.groups.iter().copied().map(Gid::from_raw).collect()),
                gid: Gid::from_raw(id.gid),
                uid: id.user.as_ref().map(|u| Uid::from_raw(u.uid)),
            }),
            _ => None,
        };
        Ok(Some(ChildSetup {
            rlimits,
            nice: limits.nice,
            switch,
        }))
    }

    /// Makes `cmd` apply this setup in its child. std then starts it with fork + exec instead of
    /// posix_spawn.
    pub fn install(self, cmd: &mut tokio::process::Command) {
        // SAFETY: the hook runs in the forked child of a multi-threaded process, where only
        // async-signal-safe functions may be called. `apply` only reads values computed here, in
        // the parent, and makes raw system calls (setrlimit, setpriority, setgroups, setgid,
        // setuid); it neither allocates nor takes locks. Failure is reported through the
        // returned errno, which std sends back to the parent as the spawn error.
        unsafe {
            cmd.pre_exec(move || self.apply());
        }
    }

    /// Runs in the child, between fork and exec.
    fn apply(&self) -> io::Result<()> {
        for l in &self.rlimits {
            setrlimit(l.resource, l.soft, l.hard)?;
        }
        if let Some(nice) = self.nice {
            // SAFETY: setpriority(2) on the calling process; no memory is passed.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(s) = &self.switch {
            if let Some(groups) = &s.groups {
                setgroups(groups)?;
            }
            setgid(s.gid)?;
            if let Some(uid) = s.uid {
                setuid(uid)?;
            }
        }
        Ok(())
    }
}

/// The niceness worker runs at.
fn own_niceness() -> Result<i32, String> {
    // getpriority(2) may legitimately return -1: errno tells an error apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority(2) on the calling process; no memory is passed.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if n == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(format!(
            "cannot read worker's own niceness: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(n)
}

/// Words with which programs and runtimes report a failed allocation (compared in lower case):
/// C's strerror(ENOMEM), GNU tools, Python's MemoryError, Java's OutOfMemoryError, C++'s
/// std::bad_alloc, Go's and Node's "out of memory", Rust's "memory allocation of N bytes failed".
const ALLOCATION_FAILURES: &[&str] = &[
    "memory exhausted",
    "out of memory",
    "cannot allocate memory",
    "memoryerror",
    "bad_alloc",
    "failed to allocate",
    "allocation failed",
    "memory allocation of",
];

/// The error text of a failed attempt that ran into one of its limits, or `None` to keep the
/// usual one. `output_tail` is the end of its output.
///
/// - CPU time: the kernel sends SIGXCPU at the soft limit and SIGKILL at the hard one.
/// - Memory: RLIMIT_DATA only makes allocations fail, and what a program does then is up to it;
///   so a failure (non-zero exit, or SIGSEGV, SIGABRT, SIGBUS, SIGKILL) is blamed on the limit
///   only when its last output says an allocation failed.
pub fn exceeded_limit(limits: &Limits, exit: &Exit, output_tail: &str) -> Option<String> {
    let signal = match exit {
        Exit::Signal(s) => Signal::try_from(*s).ok(),
        _ => None,
    };
    let cpu = limits.cpu_time.map(|d| {
        format!(
            "exceeded limits.cpu_time ({}): {}",
            format_duration_spec(d),
            exit.describe()
        )
    });
    if signal == Some(Signal::SIGXCPU) {
        return cpu;
    }
    if let Some(memory) = limits.memory {
        let failed = matches!(exit, Exit::Code(c) if *c != 0)
            || matches!(
                signal,
                Some(Signal::SIGSEGV | Signal::SIGABRT | Signal::SIGBUS | Signal::SIGKILL)
            );
        let tail = output_tail.to_ascii_lowercase();
        if failed && ALLOCATION_FAILURES.iter().any(|w| tail.contains(w)) {
            return Some(format!(
                "exceeded limits.memory ({}): {}",
                format_size_spec(memory),
                exit.describe()
            ));
        }
    }
    if signal == Some(Signal::SIGKILL) {
        return cpu;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::job::RunAs;

    fn backup() -> Identity {
        Identity {
            user: Some(RunAs {
                name: "backup".into(),
                uid: 34,
                home: "/var/backups".into(),
                groups: vec![34],
            }),
            gid: 34,
            group_name: "backup".into(),
        }
    }

    const ALL: u64 = u64::MAX;

    #[test]
    fn only_root_switches_users() {
        let worker = Privileges::from_caps(1000, 1000, 0);
        assert_eq!(
            switch_needed(&backup(), &worker).unwrap_err(),
            "cannot run as user `backup`: worker runs as uid 1000, and only root can switch users (or a worker given CAP_SETUID, CAP_SETGID and CAP_KILL)"
        );
        let root = Privileges::from_caps(0, 0, ALL);
        assert_eq!(switch_needed(&backup(), &root), Ok(true));
        // Root that lost its capabilities (a restricted container) is told so.
        let weak_root = Privileges::from_caps(0, 0, 0);
        assert!(
            switch_needed(&backup(), &weak_root)
                .unwrap_err()
                .contains("runs as root but without CAP_SETUID")
        );
        // An unprivileged worker with the three capabilities may.
        let caps = (1 << CAP_SETUID) | (1 << CAP_SETGID) | (1 << CAP_KILL);
        assert_eq!(
            switch_needed(&backup(), &Privileges::from_caps(1000, 1000, caps)),
            Ok(true)
        );
    }

    #[test]
    fn worker_s_own_identity_needs_no_privilege() {
        let itself = Privileges::from_caps(34, 34, 0);
        assert_eq!(switch_needed(&backup(), &itself), Ok(false));
        // Another group for the same user does.
        let mut other_group = backup();
        other_group.gid = 4;
        other_group.group_name = "adm".into();
        assert_eq!(
            switch_needed(&other_group, &itself).unwrap_err(),
            "cannot run as group `adm`: worker runs as gid 34, and only root can switch groups (or a worker given CAP_SETGID)"
        );
        // A group alone needs CAP_SETGID only.
        let group_only = Identity {
            user: None,
            gid: 4,
            group_name: "adm".into(),
        };
        assert!(switch_needed(&group_only, &Privileges::from_caps(1000, 1000, 0)).is_err());
        assert_eq!(
            switch_needed(
                &group_only,
                &Privileges::from_caps(1000, 1000, 1 << CAP_SETGID)
            ),
            Ok(true)
        );
    }

    #[test]
    fn capabilities_come_from_cap_eff() {
        let status = "Name:\tworker\nCapInh:\t0000000000000000\nCapEff:\t00000000000000e0\n";
        let caps = effective_caps(status).unwrap();
        let p = Privileges::from_caps(1000, 1000, caps);
        assert!(p.setuid && p.setgid && p.kill && !p.sys_nice && !p.sys_resource);
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn limits_become_rlimits() {
        let limits = Limits {
            nice: Some(10),
            memory: Some(512 << 20),
            cpu_time: Some(Duration::from_millis(1500)),
            open_files: Some(1024),
            processes: Some(256),
        };
        let r = rlimits(&limits);
        let got: Vec<_> = r.iter().map(|l| (l.field, l.soft, l.hard)).collect();
        assert_eq!(
            got,
            vec![
                ("memory", 512 << 20, 512 << 20),
                ("cpu_time", 2, 7),
                ("open_files", 1024, 1024),
                ("processes", 256, 256),
            ]
        );
        let sub_second = Limits {
            cpu_time: Some(Duration::from_millis(10)),
            ..Limits::default()
        };
        assert_eq!(sub_second.cpu_seconds(), Some(1));
    }

    #[test]
    fn raising_a_hard_limit_or_lowering_niceness_needs_privilege() {
        let worker = Privileges::from_caps(1000, 1000, 0);
        let files = rlimits(&Limits {
            open_files: Some(100_000),
            ..Limits::default()
        })[0];
        assert_eq!(
            raise_problem(&files, 65536, &worker).unwrap(),
            "limits.open_files needs a hard limit of 100000, above worker's own (65536), and only root can raise it (or a worker given CAP_SYS_RESOURCE)"
        );
        assert_eq!(raise_problem(&files, u64::MAX, &worker), None);
        let root = Privileges::from_caps(0, 0, ALL);
        assert_eq!(raise_problem(&files, 65536, &root), None);

        assert!(nice_allowed(10, 0, 0, &worker));
        assert!(!nice_allowed(-5, 0, 0, &worker));
        assert!(nice_allowed(-5, 0, 25, &worker), "RLIMIT_NICE 25 allows -5");
        assert!(nice_allowed(-20, 0, 0, &root));
    }

    #[test]
    fn errors_name_the_limit_that_was_hit() {
        let limits = Limits {
            memory: Some(512 << 20),
            cpu_time: Some(Duration::from_secs(600)),
            ..Limits::default()
        };
        let sig = |s: Signal| Exit::Signal(s as i32);
        assert_eq!(
            exceeded_limit(&limits, &sig(Signal::SIGXCPU), "").unwrap(),
            "exceeded limits.cpu_time (10m): killed by signal 24 (SIGXCPU)"
        );
        assert_eq!(
            exceeded_limit(&limits, &sig(Signal::SIGKILL), "working…").unwrap(),
            "exceeded limits.cpu_time (10m): killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            exceeded_limit(
                &limits,
                &Exit::Code(1),
                "dd: memory exhausted by input buffer"
            )
            .unwrap(),
            "exceeded limits.memory (512MiB): exit code 1"
        );
        for tail in [
            "MemoryError",
            "terminate called after throwing an instance of 'std::bad_alloc'",
            "fatal error: runtime: out of memory",
            "malloc: Cannot allocate memory",
            "memory allocation of 1073741824 bytes failed",
            "Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space",
        ] {
            assert_eq!(
                exceeded_limit(&limits, &sig(Signal::SIGABRT), tail).unwrap(),
                "exceeded limits.memory (512MiB): killed by signal 6 (SIGABRT)",
                "{tail}"
            );
        }
        // An allocation failure killed by SIGKILL is the memory's, not the CPU's.
        assert!(
            exceeded_limit(&limits, &sig(Signal::SIGKILL), "out of memory")
                .unwrap()
                .contains("limits.memory")
        );
        // A failure with no such message keeps the usual text.
        assert_eq!(
            exceeded_limit(&limits, &Exit::Code(3), "no such file"),
            None
        );
        assert_eq!(
            exceeded_limit(&limits, &sig(Signal::SIGTERM), "out of memory"),
            None
        );
        // A success that printed the words is no failure.
        assert_eq!(
            exceeded_limit(&limits, &Exit::Code(0), "out of memory"),
            None
        );
        // Without the limits, nothing is blamed on them.
        let none = Limits::default();
        assert_eq!(exceeded_limit(&none, &sig(Signal::SIGXCPU), ""), None);
        assert_eq!(exceeded_limit(&none, &Exit::Code(1), "out of memory"), None);
        assert_eq!(exceeded_limit(&none, &sig(Signal::SIGKILL), ""), None);
    }
}
