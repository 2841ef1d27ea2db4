//! Compiles the `parley.v1` protos under `proto/parley/v1/` with protox (pure Rust: no system
//! `protoc`) and generates tonic/prost code. Every file is one package, so the generated code
//! is one Rust module whatever the file split.

/// The proto files, one per layer: the node link, the Jobs API, the job spec and result, the
/// DP types they share, and one file per job kind.
const PROTOS: &[&str] = &[
    "parley/v1/link.proto",
    "parley/v1/jobs.proto",
    "parley/v1/spec.proto",
    "parley/v1/result.proto",
    "parley/v1/dp.proto",
    "parley/v1/kinds/psi.proto",
    "parley/v1/kinds/dp_stats.proto",
    "parley/v1/kinds/secure_sum.proto",
    "parley/v1/kinds/rfm.proto",
    "parley/v1/kinds/lift.proto",
    "parley/v1/kinds/overlap.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
