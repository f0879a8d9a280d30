//! terraform-provider-matrixhost. The resources land with the provider issue; until then the
//! binary only refuses to run, so nobody mistakes it for a working provider.
fn main() {
    eprintln!(
        "terraform-provider-matrixhost {}: not implemented yet (API contract {})",
        env!("CARGO_PKG_VERSION"),
        matrixhost_api::API_VERSION
    );
    std::process::exit(1);
}
