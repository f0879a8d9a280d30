//! Whether a homeserver answers: `GET /_matrix/client/versions` straight on its Unix socket,
//! from a socket the tenant's uid listens on. Only the status line is read (and at most a few
//! bytes of it): nothing else the homeserver says is interpreted.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ingress::connect;

pub async fn ready(socket: &Path, tenant_uid: u32) -> bool {
    let attempt = async {
        let mut stream = connect(socket, tenant_uid).await?;
        stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(&head == b"HTTP/1.1 200" || &head == b"HTTP/1.0 200")
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(true)))
}
