fn main() -> std::process::ExitCode {
    etcdops_agent::cli::main()
}
