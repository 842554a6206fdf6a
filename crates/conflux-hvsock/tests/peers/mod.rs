//! The framing's peer models, byte for byte: the old Go peer and the OCaml
//! peer, each in role S or C of test vector 5, over a Unix socket. Shared
//! by conflux-hvsock's `flows` test and the CLI's `cat` test (which
//! includes this file by path: only tokio may be used here).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Test vector 5, C to S: `Data(5)` "hello", then ShutdownWrite.
pub(crate) const C_TO_S: [u8; 13] = [0x05, 0, 0, 0, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xad, 0xde, 0xef, 0xbe];
/// Test vector 5, S to C: `Data(5)` "world", then Close.
pub(crate) const S_TO_C: [u8; 13] = [0x05, 0, 0, 0, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0xad, 0xde, 0xad, 0xde];
/// The Close marker (also C's acknowledgement of S's Close).
pub(crate) const CLOSE: [u8; 4] = [0xad, 0xde, 0xad, 0xde];

/// The old Go peer: a header is one `read` of 4 bytes (asserted whole), `Data(0)`
/// skipped; after sending Close it waits for exactly one 4-byte message, then closes.
pub(crate) async fn go_peer(mut sock: UnixStream, role_c: bool) -> Vec<u8> {
    async fn read_header(sock: &mut UnixStream) -> u32 {
        let mut h = [0u8; 4];
        let n = sock.read(&mut h).await.unwrap();
        assert_eq!(n, 4, "the Go peer reads a header with one read");
        u32::from_le_bytes(h)
    }
    /// Data messages into `received` until the header `end`.
    async fn read_until(sock: &mut UnixStream, end: u32, received: &mut Vec<u8>) {
        loop {
            match read_header(sock).await {
                h if h == end => return,
                0 => {}
                n if n < 1 << 31 => {
                    let mut p = vec![0u8; n as usize];
                    sock.read_exact(&mut p).await.unwrap();
                    received.extend_from_slice(&p);
                }
                other => panic!("unexpected header {other:#x}"),
            }
        }
    }
    let mut received = Vec::new();
    if role_c {
        sock.write_all(&C_TO_S).await.unwrap();
        read_until(&mut sock, 0xDEAD_DEAD, &mut received).await;
        sock.write_all(&CLOSE).await.unwrap();
    } else {
        read_until(&mut sock, 0xBEEF_DEAD, &mut received).await;
        sock.write_all(&S_TO_C).await.unwrap();
        assert_eq!(read_header(&mut sock).await, 0xDEAD_DEAD, "exactly one message: the ack");
    }
    received
}

/// The OCaml peer: reads frames with full reads; after sending Close it drains
/// data frames until the peer's Close (or ShutdownRead, or Eof).
pub(crate) async fn ocaml_peer(mut sock: UnixStream, role_c: bool) -> Vec<u8> {
    async fn frame(sock: &mut UnixStream) -> Option<(u32, Vec<u8>)> {
        let mut h = [0u8; 4];
        sock.read_exact(&mut h).await.ok()?;
        let n = u32::from_le_bytes(h);
        let mut p = Vec::new();
        if n < 1 << 31 {
            p.resize(n as usize, 0);
            sock.read_exact(&mut p).await.ok()?;
        }
        Some((n, p))
    }
    let mut received = Vec::new();
    if role_c {
        sock.write_all(&C_TO_S).await.unwrap();
        while let Some((h, p)) = frame(&mut sock).await {
            received.extend_from_slice(&p);
            if h == 0xDEAD_DEAD {
                sock.write_all(&CLOSE).await.unwrap();
                break;
            }
        }
    } else {
        while let Some((h, p)) = frame(&mut sock).await {
            received.extend_from_slice(&p);
            if h == 0xBEEF_DEAD {
                break;
            }
        }
        sock.write_all(&S_TO_C).await.unwrap();
        while let Some((h, _)) = frame(&mut sock).await {
            if h == 0xDEAD_DEAD || h == 0xDEAD_BEEF {
                break;
            }
        }
    }
    received
}
