//! Facts about the host the agent runs on (hostname, CPUs, memory, load,
//! uptime), read through sysinfo. Each read refreshes only RAM figures; the
//! CPU count is read once.

use std::sync::{Mutex, PoisonError};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};

/// What the host looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    /// Logical CPUs.
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub uptime_secs: u64,
}

/// Reads [`HostFacts`]; holds the one sysinfo `System` so reads stay cheap.
#[derive(Debug)]
pub struct HostReader {
    /// `None` when sysinfo cannot read this platform (facts are then zero).
    system: Mutex<Option<System>>,
    cpus: u32,
}

impl Default for HostReader {
    fn default() -> Self {
        HostReader::new()
    }
}

impl HostReader {
    pub fn new() -> HostReader {
        let mut system = System::new().ok();
        let cpus = match &mut system {
            Some(s) => {
                s.refresh_cpu_list(CpuRefreshKind::nothing());
                u32::try_from(s.cpus().len()).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        let cpus = if cpus == 0 {
            std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        } else {
            cpus
        };
        HostReader {
            system: Mutex::new(system),
            cpus,
        }
    }

    /// The facts now. A fact sysinfo cannot read is left empty (zero).
    pub fn read(&self) -> HostFacts {
        let (memory_total_bytes, memory_available_bytes) = {
            let mut system = self.system.lock().unwrap_or_else(PoisonError::into_inner);
            match system.as_mut() {
                Some(s) => {
                    s.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                    (s.total_memory(), s.available_memory())
                }
                None => (0, 0),
            }
        };
        let load = System::load_average().ok();
        HostFacts {
            hostname: System::host_name().unwrap_or_default(),
            cpus: self.cpus,
            memory_total_bytes,
            memory_available_bytes,
            load1: load.as_ref().map_or(0.0, |l| l.one),
            load5: load.as_ref().map_or(0.0, |l| l.five),
            load15: load.as_ref().map_or(0.0, |l| l.fifteen),
            uptime_secs: System::uptime().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_host_are_sane() {
        let reader = HostReader::new();
        let facts = reader.read();
        assert!(facts.cpus >= 1, "{facts:?}");
        assert!(!facts.hostname.is_empty(), "{facts:?}");
        assert!(facts.memory_total_bytes > 0, "{facts:?}");
        assert!(
            facts.memory_available_bytes <= facts.memory_total_bytes,
            "{facts:?}"
        );
        assert!(
            facts.load1 >= 0.0 && facts.load5 >= 0.0 && facts.load15 >= 0.0,
            "{facts:?}"
        );
        assert!(facts.uptime_secs > 0, "{facts:?}");
        // A second read refreshes memory and keeps the CPU count.
        assert_eq!(reader.read().cpus, facts.cpus);
    }
}
