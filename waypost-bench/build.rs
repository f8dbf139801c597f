//! Generates the peers' Echo services: tonic's from proto/echo.proto (needs protoc), and with
//! the `volo` feature volo-thrift's from idl/echo.thrift.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/echo.proto")?;
    #[cfg(feature = "volo")]
    volo_build::Builder::thrift()
        .add_service("idl/echo.thrift")
        .filename("volo_echo.rs".into())
        .write()?;
    println!("cargo:rerun-if-changed=idl/echo.thrift");
    println!("cargo:rerun-if-changed=proto/echo.proto");
    Ok(())
}
