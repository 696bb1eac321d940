//! What the benchmark binaries (`src/bin/bench-*.rs`) share: their common
//! options and the binaries they drive.

use std::path::PathBuf;
use std::str::FromStr;

use crate::Bins;

/// `--bin-dir`, `--mb`, `--runs`.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Where etcdops and etcdops-agent are (build them with --release first).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Database size written, MB.
    #[arg(long, value_name = "N", default_value_t = 250, value_parser = positive::<usize>)]
    pub mb: usize,
    /// Runs (of every scenario or mode).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    pub runs: usize,
}

impl Common {
    /// The binaries in --bin-dir; exits 2 naming what is missing.
    pub fn bins(&self, bench: &str) -> Bins {
        let bins = Bins {
            agent: self.bin_dir.join("etcdops-agent"),
            cli: self.bin_dir.join("etcdops"),
        };
        for path in [&bins.agent, &bins.cli] {
            if !path.is_file() {
                eprintln!(
                    "{bench}: {} is missing: build with `cargo build --release -p etcdops-agent -p etcdops-coordinator` or pass --bin-dir",
                    path.display()
                );
                std::process::exit(2);
            }
        }
        bins
    }
}

/// A number above 0 (a value parser for counts and rates).
pub fn positive<T: FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        Ok(_) => Err("must be above 0".into()),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_positive_numbers() {
        assert_eq!(positive::<usize>("3"), Ok(3));
        assert!(positive::<usize>("0").expect_err("zero").contains("above 0"));
        assert!(
            positive::<u32>("x")
                .expect_err("text")
                .contains("not a whole number")
        );
        assert!(positive::<usize>("-1").is_err());
    }
}
