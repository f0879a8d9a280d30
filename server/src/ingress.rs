//! The platform's ingress (R3): the only way into a homeserver. Homeservers listen on nothing
//! but a Unix socket in a directory only the control plane's group can enter (and which no
//! other tenant's sandbox even contains); the ingress gives each one a TCP port on the
//! platform's address and proxies HTTP to that socket, once the socket's listener is shown by
//! its peer credentials to be the homeserver's own tenant. A tenant that replaced its socket
//! with a link to another tenant's gets nothing.
//!
//! It is a reverse proxy rather than a byte relay because Synapse, listening on a socket, learns
//! the client's address only from `X-Forwarded-For` (its login, rate limits and 30-day IP log,
//! R17, need it). Whatever forwarding headers a client sends are dropped and the ingress sets
//! its own. While a homeserver restarts (a settings change, a restore), a request waits for its
//! socket a little instead of being refused.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use matrixhost_agent_api::HomeserverId;
use tokio::net::{TcpListener, UnixStream};

/// How long a request waits for a restarting homeserver.
const WAIT_FOR_SOCKET: Duration = Duration::from_secs(20);

const UNAVAILABLE: &str = r#"{"errcode":"M_UNKNOWN","error":"This homeserver is not available right now; try again shortly."}"#;

/// Connects to a homeserver's socket and checks that the listener is the tenant's uid: a
/// tenant that swapped its socket for a link to another's gets nothing.
pub async fn connect(socket: &Path, tenant_uid: u32) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(socket).await?;
    let peer = stream.peer_cred()?.uid();
    if peer != tenant_uid {
        tracing::warn!(expected_uid = tenant_uid, peer_uid = peer, "a homeserver's socket is not its tenant's; refusing it");
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "the socket is not the tenant's"));
    }
    Ok(stream)
}

struct Route {
    port: u16,
    tenant_uid: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

/// The listeners, by homeserver id.
pub struct Ingress {
    address: std::net::IpAddr,
    routes: Mutex<HashMap<String, Route>>,
    /// The socket of a homeserver (through the control plane's directory descriptors).
    socket_of: SocketOf,
}

/// Where a homeserver's socket is, through the control plane's directory descriptors.
type SocketOf = Box<dyn Fn(&HomeserverId) -> Option<PathBuf> + Send + Sync>;

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").field("address", &self.address).finish()
    }
}

impl Ingress {
    pub fn new(address: std::net::IpAddr, socket_of: impl Fn(&HomeserverId) -> Option<PathBuf> + Send + Sync + 'static) -> Ingress {
        Ingress { address, routes: Mutex::default(), socket_of: Box::new(socket_of) }
    }

    /// Listens on `port` for the homeserver (once; a later call only updates the tenant's uid).
    pub async fn ensure(&self, id: &HomeserverId, port: u16, tenant_uid: u32) -> std::io::Result<()> {
        {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(route) = routes.get(id.as_str()) {
                if route.port == port && !route.task.is_finished() {
                    route.tenant_uid.store(tenant_uid, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        let socket = (self.socket_of)(id).ok_or_else(|| std::io::Error::other("no socket directory"))?;
        let listener = TcpListener::bind(SocketAddr::new(self.address, port)).await?;
        let uid = Arc::new(AtomicU32::new(tenant_uid));
        let upstream = Arc::new(Upstream { socket, tenant_uid: uid.clone(), homeserver: id.to_string() });
        let task = tokio::spawn(accept(listener, upstream));
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = routes.insert(id.to_string(), Route { port, tenant_uid: uid, task }) {
            old.task.abort();
        }
        tracing::info!(homeserver_id = %id, port, "ingress listening");
        Ok(())
    }

    /// Stops listening for the homeserver.
    pub fn remove(&self, id: &HomeserverId) {
        if let Some(route) = self.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(id.as_str()) {
            route.task.abort();
            tracing::info!(homeserver_id = %id, port = route.port, "ingress closed");
        }
    }
}

/// Where one homeserver's requests go.
struct Upstream {
    socket: PathBuf,
    tenant_uid: Arc<AtomicU32>,
    homeserver: String,
}

type Body = BoxBody<Bytes, hyper::Error>;

async fn accept(listener: TcpListener, upstream: Arc<Upstream>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(homeserver_id = %upstream.homeserver, error = %e, "ingress accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| proxy(upstream.clone(), peer, req));
            let served = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(tcp), service).await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "ingress connection ended");
            }
        });
    }
}

fn unavailable() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(UNAVAILABLE.as_bytes())).map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A connection to the homeserver, waiting a little for one that is restarting.
async fn open(upstream: &Upstream) -> std::io::Result<UnixStream> {
    let deadline = Instant::now() + WAIT_FOR_SOCKET;
    loop {
        match connect(&upstream.socket, upstream.tenant_uid.load(Ordering::Relaxed)).await {
            Ok(stream) => return Ok(stream),
            // A socket that is not the tenant's is refused at once; a missing one is waited for.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied || Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn proxy(upstream: Arc<Upstream>, peer: SocketAddr, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // The client's own forwarding headers are not believed; these are the ingress's.
    let headers = req.headers_mut();
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"] {
        headers.remove(name);
    }
    if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", ip);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if !headers.contains_key(HOST) {
        headers.insert(HOST, HeaderValue::from_static("localhost"));
    }
    let stream = match open(&upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(homeserver_id = %upstream.homeserver, error = %e, "homeserver unavailable");
            return Ok(unavailable());
        }
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(_) => return Ok(unavailable()),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    match sender.send_request(req).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(e) => {
            tracing::debug!(homeserver_id = %upstream.homeserver, error = %e, "the homeserver dropped a request");
            Ok(unavailable())
        }
    }
}
