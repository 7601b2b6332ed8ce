//! What the kernel says about a process: resident memory, CPU time, open-file limit.
//! The parsers are pure; `read_*` do the file I/O.

use anyhow::{Context as _, anyhow};

/// Resident memory now and at its peak, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`.
pub fn parse_memory(status: &str) -> anyhow::Result<Memory> {
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| anyhow!("/proc status: no {name} line"))?;
        let kb = line
            .trim()
            .strip_suffix("kB")
            .ok_or_else(|| anyhow!("/proc status: {name}: {line:?} is not in kB"))?
            .trim()
            .parse::<u64>()
            .with_context(|| format!("/proc status: {name}: {line:?}"))?;
        Ok(kb * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS")?,
        hwm: field("VmHWM")?,
    })
}

/// User + system CPU time in clock ticks from the text of `/proc/<pid>/stat`.
pub fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc stat: no ')' after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        let raw = fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("/proc stat: only {} fields", fields.len() + 2))?;
        raw.parse::<u64>()
            .with_context(|| format!("/proc stat: field {n}: {raw:?}"))
    };
    Ok(field(14)? + field(15)?)
}

/// The soft "Max open files" limit from the text of `/proc/<pid>/limits`.
pub fn parse_open_files_limit(limits: &str) -> anyhow::Result<Option<u64>> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| anyhow!("/proc limits: no \"Max open files\" line"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("/proc limits: {line:?}: no soft limit"))?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse()
        .map(Some)
        .with_context(|| format!("/proc limits: {line:?}"))
}

pub fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    parse_memory(&std::fs::read_to_string(&path).with_context(|| path.clone())?)
        .with_context(|| path)
}

pub fn read_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    parse_cpu_ticks(&std::fs::read_to_string(&path).with_context(|| path.clone())?)
        .with_context(|| path)
}

pub fn read_own_open_files_limit() -> anyhow::Result<Option<u64>> {
    let path = "/proc/self/limits";
    parse_open_files_limit(&std::fs::read_to_string(path).context(path)?).context(path)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know if that fails).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_status() {
        let status = "Name:\tsluice\nVmPeak:\t  999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(
            parse_memory(status).unwrap(),
            Memory {
                rss: 1024 * 1024,
                hwm: 2048 * 1024
            }
        );
        let err = parse_memory("VmHWM:\t1 kB\n").unwrap_err();
        assert!(err.to_string().contains("VmRSS"), "{err}");
    }

    #[test]
    fn cpu_ticks_from_stat_with_a_tricky_command_name() {
        // Fields 14 (utime) = 7 and 15 (stime) = 5.
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 12);
        assert!(parse_cpu_ticks("4242 (x) S 1 2").is_err());
        assert!(parse_cpu_ticks("no parenthesis").is_err());
    }

    #[test]
    fn own_stat_parses() {
        let ticks = read_cpu_ticks(std::process::id()).unwrap();
        let mem = read_memory(std::process::id()).unwrap();
        assert!(mem.rss > 0 && mem.hwm >= mem.rss, "{mem:?}, {ticks}");
    }

    #[test]
    fn open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files_limit(limits).unwrap(), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited).unwrap(), None);
        assert!(parse_open_files_limit("nothing\n").is_err());
        assert!(read_own_open_files_limit().is_ok());
    }
}
