//! `parleyctl`: the Parley CLI for analysts and auditors. All the work is in the
//! [`parley_ctl`] library; see `parleyctl --help`.

fn main() -> std::process::ExitCode {
    parley_ctl::main_with_args(std::env::args_os())
}
