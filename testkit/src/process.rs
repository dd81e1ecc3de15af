//! Processes the tests and the benchmark start: commands, their logs, their resource use.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs a command to completion and returns its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String, Error> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (bounded) for `needle` in any of the files at `paths`; returns the rest of that line.
pub async fn wait_for_line(
    paths: &[&Path],
    needle: &str,
    timeout: Duration,
) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for path in paths {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle))
                && let Some((_, rest)) = line.split_once(needle)
            {
                return Ok(rest.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("no {needle:?} in {paths:?} within {timeout:?}").into())
}

/// The leading `host:port` of `s` (drops colour codes and whatever follows).
pub fn leading_addr(s: &str) -> String {
    s.trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

/// (CPU seconds, peak RSS in KiB) of a live process.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state (field 3).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz: f64 = run(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some((ticks as f64 / hz, hwm))
}
