//! `parleyctl`: the Parley CLI for analysts and auditors. All the work is in
//! [`parley_coordinator::ctl`]; see `parleyctl --help`.

fn main() -> std::process::ExitCode {
    parley_coordinator::ctl::main_with_args(std::env::args_os())
}
