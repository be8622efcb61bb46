fn main() -> std::process::ExitCode {
    metrom_controller::cli::main()
}
