//! The `etcdops` binary: everything lives in [`etcdops_coordinator::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    etcdops_coordinator::cli::main()
}
