//! The replica's HTTP/2 rapid-reset protection against real TCP: a client that cancels its calls, even many at
//! once after the server stalled, keeps its connection; a reset flood loses it.
//!
//! The server is the replica's (`node::grpc_server`, with the gRPC health service) on its own single-threaded
//! runtime, so a test can pause it the way a stopped or starved process is paused: everything a client sends
//! meanwhile waits in the socket and reaches the server at once when it runs again. The client speaks HTTP/2
//! frame by frame over a plain socket, so each test controls exactly which frames go out, and when.

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// No step of these tests waits this long unless the server is broken; it only turns a hang into a failure.
const LIMIT: Duration = Duration::from_secs(60);

/// The replica's gRPC server with the health service, on a thread and runtime of its own.
struct Server {
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    fn start() -> Server {
        let (ready, started) = std_mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
            ready
                .send((listener.local_addr().unwrap(), runtime.handle().clone()))
                .unwrap();
            let (_health, health_service) = tonic_health::server::health_reporter();
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            runtime
                .block_on(
                    bft_replica::node::grpc_server()
                        .add_service(health_service)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        }),
                )
                .unwrap();
        });
        let (addr, runtime) = started.recv().unwrap();
        Server {
            addr,
            runtime,
            _stop: stop,
        }
    }

    /// Stops the server's runtime (nothing of it runs) until the returned sender is dropped or sent to.
    fn pause(&self) -> std_mpsc::Sender<()> {
        let (paused, is_paused) = std_mpsc::channel();
        let (resume, resumed) = std_mpsc::channel::<()>();
        self.runtime.spawn(async move {
            paused.send(()).unwrap();
            // Blocks the runtime's only thread: a stopped process.
            let _ = resumed.recv();
        });
        is_paused.recv().unwrap();
        resume
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gRPC call's request headers, HPACK-encoded from the static table and literals (no dynamic table).
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http
    let literal = |h: &mut Vec<u8>, value: &str| {
        h.push(value.len() as u8);
        h.extend_from_slice(value.as_bytes());
    };
    h.push(0x04); // :path, literal value, not indexed
    literal(&mut h, path);
    h.push(0x01); // :authority
    literal(&mut h, "localhost");
    h.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31)
    literal(&mut h, "application/grpc");
    h.push(0x00); // te: trailers, a new name
    literal(&mut h, "te");
    literal(&mut h, "trailers");
    h
}

/// A whole gRPC request for the health service (`service: ""`, an empty message), half-closing the stream.
fn health_call(stream: u32, method: &str) -> Vec<u8> {
    let mut bytes = frame(
        HEADERS,
        END_HEADERS,
        stream,
        &grpc_headers(&format!("/grpc.health.v1.Health/{method}")),
    );
    bytes.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    bytes
}

fn cancel(stream: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes())
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(socket: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    socket.read_exact(&mut payload).await?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// GOAWAY's error code and debug data.
fn goaway(f: &Frame) -> (u32, String) {
    let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
    (code, String::from_utf8_lossy(&f.payload[8..]).into_owned())
}

/// GOAWAY's last stream id: the last stream the server took up.
fn goaway_last_stream(f: &Frame) -> u32 {
    u32::from_be_bytes(f.payload[0..4].try_into().unwrap()) & 0x7fff_ffff
}

/// An HTTP/2 connection: the preface and SETTINGS both ways, and room to receive whatever the server sends.
async fn connect(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // Room in the kernel for a burst written while the server is paused, so writing it never waits for the server.
    socket.set_send_buffer_size(4 << 20).unwrap();
    let mut socket = socket.connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(frame(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()));
    socket.write_all(&hello).await.unwrap();
    loop {
        let f = read_frame(&mut socket).await.unwrap();
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            socket.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
            return socket;
        }
    }
}

/// Reads frames until `done` says so; panics on a GOAWAY or a closed connection.
async fn read_until(socket: &mut TcpStream, what: &str, mut done: impl FnMut(&Frame) -> bool) {
    let reading = async {
        loop {
            let f = read_frame(socket)
                .await
                .unwrap_or_else(|e| panic!("{what}: the connection was lost: {e}"));
            if f.kind == GOAWAY {
                panic!("{what}: the server sent GOAWAY {:?}", goaway(&f));
            }
            if done(&f) {
                return;
            }
        }
    };
    tokio::time::timeout(LIMIT, reading)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"));
}

/// A complete health check on a new stream of the connection: the connection still serves calls.
async fn check_still_served(socket: &mut TcpStream, stream: u32, what: &str) {
    socket.write_all(&health_call(stream, "Check")).await.unwrap();
    read_until(socket, what, |f| {
        f.stream == stream && f.kind == HEADERS && f.flags & END_STREAM != 0
    })
    .await;
}

#[tokio::test]
async fn a_client_that_cancels_its_calls_keeps_its_connection() {
    let server = Server::start();
    let mut socket = connect(server.addr).await;
    let mut next = 1u32;

    // 300 calls cancelled one after another once the server answered (a Watch stays open after its first answer):
    // none of these resets counts against the client.
    for _ in 0..300 {
        let stream = next;
        next += 2;
        socket.write_all(&health_call(stream, "Watch")).await.unwrap();
        read_until(&mut socket, "a Watch answered", |f| {
            f.stream == stream && f.kind == HEADERS
        })
        .await;
        socket.write_all(&cancel(stream)).await.unwrap();
    }
    check_still_served(&mut socket, next, "after 300 calls cancelled once answered").await;
    next += 2;

    // The server stalls (a paused process; a partition does the same) while the client's calls time out: 500 calls
    // are made and cancelled meanwhile, and all of them reach the server at once when it runs again, before it
    // accepted any. With h2's default limit (20) the client lost its connection here: GOAWAY too_many_resets.
    let resume = server.pause();
    let mut burst = Vec::new();
    for _ in 0..500 {
        burst.extend(health_call(next, "Check"));
        burst.extend(cancel(next));
        next += 2;
    }
    socket.write_all(&burst).await.unwrap();
    drop(resume);
    check_still_served(&mut socket, next, "after 500 calls cancelled during a stall").await;
    next += 2;

    // And again: the limit is on resets waiting to be accepted at once, not on a client's whole life.
    for round in 0..3 {
        let resume = server.pause();
        let mut burst = Vec::new();
        for _ in 0..500 {
            burst.extend(health_call(next, "Check"));
            burst.extend(cancel(next));
            next += 2;
        }
        socket.write_all(&burst).await.unwrap();
        drop(resume);
        check_still_served(&mut socket, next, &format!("after stall {}", round + 2)).await;
        next += 2;
    }
    println!("one connection: 300 calls cancelled once answered and 2,000 cancelled unseen in 4 stalls; still served");
}

/// `n` streams from `next` on, each opened with the smallest request headers (:method POST, :scheme http, :path /,
/// all from HPACK's static table) and reset at once.
fn flood(next: &mut u32, n: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n as usize * 25);
    for _ in 0..n {
        bytes.extend(frame(HEADERS, END_HEADERS, *next, &[0x83, 0x86, 0x84]));
        bytes.extend(cancel(*next));
        *next += 2;
    }
    bytes
}

#[tokio::test]
async fn a_reset_flood_loses_its_connection() {
    let server = Server::start();
    let socket = connect(server.addr).await;
    let (mut read, mut write) = socket.into_split();
    const BURST: u32 = 4_096;
    const MOST: u32 = 500_000;

    // Thousands of HEADERS each followed by RST_STREAM: the first burst while the server is paused, so that it
    // surely outruns the server, then on and on until the server gives up on the connection.
    let resume = server.pause();
    let mut next = 1u32;
    write.write_all(&flood(&mut next, BURST)).await.unwrap();
    drop(resume);
    let writer = tokio::spawn(async move {
        while next / 2 < MOST {
            if write.write_all(&flood(&mut next, BURST)).await.is_err() {
                break;
            }
        }
        next / 2
    });
    let outcome = tokio::time::timeout(LIMIT, async {
        loop {
            match read_frame(&mut read).await {
                Ok(f) if f.kind == GOAWAY => return Some((goaway(&f), goaway_last_stream(&f))),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("the flood was still served after a minute");
    let sent = writer.await.unwrap();
    let (reason, last_stream) = outcome.expect("the flood's connection closed without a GOAWAY");
    assert_eq!(
        reason,
        (ENHANCE_YOUR_CALM, "too_many_resets".to_string()),
        "the flood's connection ends with GOAWAY too_many_resets"
    );
    assert!(sent < MOST, "the server took all {sent} resets");
    let taken = last_stream.div_ceil(2);
    assert!(
        taken > bft_replica::node::MAX_PENDING_ACCEPT_RESETS as u32,
        "GOAWAY after {taken} streams"
    );
    println!(
        "a flood of HEADERS+RST_STREAM pairs: GOAWAY too_many_resets after the server took up {taken} of them \
         ({sent} written before the connection closed)"
    );

    // The server itself goes on serving others.
    let mut other = connect(server.addr).await;
    check_still_served(&mut other, 1, "a new connection after the flood").await;
}
