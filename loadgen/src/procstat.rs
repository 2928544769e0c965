//! CPU time and peak memory of processes, read from Linux's `/proc`.

use std::collections::BTreeMap;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every architecture's
/// user-space ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds of a process (all its threads), `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (2nd field) may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; `fields[0]` is the 3rd (state).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// The peak resident set size of a process (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The processes whose command name is `name` (`nats-server`, `postgres`).
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name))
        .collect()
}

/// CPU seconds of every process of a name, to diff two readings of a server that is not ours
/// (PostgreSQL forks a process per connection).
#[derive(Debug, Clone, Default)]
pub struct GroupCpu(BTreeMap<u32, f64>);

impl GroupCpu {
    pub fn read(name: &str) -> Self {
        GroupCpu(pids_named(name).into_iter().filter_map(|pid| Some((pid, cpu_seconds(pid)?))).collect())
    }

    /// CPU seconds spent since `earlier` by the processes alive now (a process that exited in
    /// between is not counted: our connections stay open for the whole measurement).
    pub fn since(&self, earlier: &GroupCpu) -> f64 {
        self.0.iter().map(|(pid, now)| now - earlier.0.get(pid).copied().unwrap_or(0.0)).sum()
    }
}

/// The machine's CPU time so far (`/proc/stat`'s first line), busy and in all, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8) // user nice system idle iowait irq softirq steal (guest time is in user)
            .filter_map(|field| field.parse().ok())
            .collect();
        let total = ticks.iter().sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        MachineCpu { busy: total - idle.min(total), total }
    }

    /// The share of all cores' time that was busy since `earlier`, in [0, 1].
    pub fn busy_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 { 0.0 } else { self.busy.saturating_sub(earlier.busy) as f64 / total as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let started = cpu_seconds(pid).expect("our own stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid).unwrap() > started, "burning CPU shows");
        assert!(peak_rss_bytes(pid).unwrap() > 1024 * 1024);
        assert_eq!(cpu_seconds(u32::MAX), None);
        let (before, after) = (MachineCpu::read(), MachineCpu::read());
        assert!(after.total >= before.total && before.total > 0);
        assert!((0.0..=1.0).contains(&after.busy_since(&before)));
    }
}
