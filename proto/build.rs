//! Compiles `proto/parley.proto` with protox (pure Rust: no system `protoc`) and generates
//! tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/parley.proto");
    let fds = protox::compile(["proto/parley.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
