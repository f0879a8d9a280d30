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
    // One malloc arena: the provider's work is small requests, and each extra arena keeps its
    // own free pages resident.
    // SAFETY: called before any other thread exists.
    // Larger blocks are mapped and unmapped on their own, so freed memory goes back at once.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
    // One thread: the provider waits on the API and on Terraform, it does not compute.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
