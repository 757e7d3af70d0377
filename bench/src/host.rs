//! The server's memory and CPU, read from /proc.

/// Resident set size in bytes, summed over `pids` (`None` without any).
pub fn rss_bytes(pids: &[u32]) -> Option<u64> {
    sum(pids, rss_of)
}

/// User plus system CPU seconds, summed over `pids`.
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    sum(pids, cpu_of)
}

fn sum<T: std::iter::Sum>(pids: &[u32], read: fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| read(*pid)).sum()
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s.
    Some((user + system) / 100.0)
}
