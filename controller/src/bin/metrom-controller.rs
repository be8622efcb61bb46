fn main() -> std::process::ExitCode {
    metrom_controller::daemon::main()
}
