fn main() -> std::process::ExitCode {
    etcdops_coordinator::cli::main()
}
