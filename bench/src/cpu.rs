//! CPU time of a process from /proc/<pid>/stat, so that every result can say how much CPU bought it — on a shared
//! two-core machine the broker and the load generator compete, and throughput alone would mislead.

use std::fs;

/// User plus system CPU seconds used so far by `pid` (or this process for `None`), or `None` if unreadable.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = fs::read_to_string(path).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_s())
}

/// CPU seconds the whole machine has been busy since boot, over all cores (/proc/stat's first line: user, nice,
/// system, irq, softirq and steal; idle and iowait are not busy; guest time is already inside user). Beside the
/// broker's and this process's own figures it shows what else ran on a shared machine during a run, and the
/// kernel's work no process is charged with (softirq network processing, the ext4 journal thread).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy_ticks(stat.lines().next()?).map(|ticks| ticks as f64 / clock_ticks_per_s())
}

fn parse_machine_busy_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = values[..] else { return None };
    Some(user + nice + system + irq + softirq + steal)
}

/// Fields 14 and 15 (utime, stime) counted after the command name, which is in parentheses and may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After ")" come state (field 3) .. ; utime is field 14, so skip fields 3..=13 (11 fields).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf reads a constant system parameter and has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_past_a_name_with_spaces() {
        // Proves fields are counted from the closing parenthesis, not from the start of the line.
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(200));
    }

    #[test]
    fn machine_busy_counts_all_but_idle_and_iowait() {
        // Proves idle (4th) and iowait (5th) are left out and guest fields (9th, 10th) are not added twice.
        let line = "cpu  100 2 30 5000 40 1 7 3 11 0";
        assert_eq!(parse_machine_busy_ticks(line), Some(100 + 2 + 30 + 1 + 7 + 3));
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        // Proves /proc/self/stat is readable and the value is a plausible, non-negative number of seconds.
        let mut spin = 0u64;
        for index in 0..5_000_000u64 {
            spin = spin.wrapping_add(index * index);
        }
        assert!(spin > 0);
        let seconds = cpu_seconds(None).unwrap();
        assert!((0.0..1e6).contains(&seconds));
    }
}
