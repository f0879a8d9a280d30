//! terraform-provider-matrixhost: Terraform starts this binary and talks to it over gRPC
//! (plugin protocol 6). See the `terraform_provider_matrixhost` library for the provider.

use terraform_provider_matrixhost::{provider, quiet_backtraces, MatrixhostProvider};

fn main() {
    // First, before any thread exists: no backtraces in diagnostics or panic output.
    quiet_backtraces();
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("terraform-provider-matrixhost {} (API contract {})", provider::VERSION, matrixhost_api::API_VERSION);
        return;
    }
    // Before the runtime exists: the gRPC listener gets TCP_NODELAY when its address is printed.
    terraform_provider_matrixhost::plugin_socket::intercept_handshake();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terraform-provider-matrixhost: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(tf_provider::serve(provider::NAME, MatrixhostProvider::default())) {
        eprintln!("terraform-provider-matrixhost: {}", terraform_provider_matrixhost::diag::scrub(format!("{e:#}")));
        std::process::exit(1);
    }
}
