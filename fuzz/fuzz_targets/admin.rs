//! The admin API's request handling: the bytes a client sends on one
//! connection, read by hyper (HTTP/1) and answered by the API's router
//! behind its guard (`obs::admin::router`), under the API's limits
//! (`http_serve::serve_connection`), from memory instead of a socket.
//!
//! The input's first byte is how many bytes each read returns (0: all at
//! once); the rest is what the client sends, after which it half-closes.

#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use sluice::obs::admin::{AdminState, LIMITS, router};

sluice_fuzz::fuzz_target!(|data| {
    let Some((&chunk, request)) = data.split_first() else {
        return;
    };
    let (runtime, app) = server();
    let io = Memory {
        input: request.to_vec(),
        read: 0,
        chunk: if chunk == 0 {
            usize::MAX
        } else {
            usize::from(chunk)
        },
        output: Vec::new(),
    };
    let answer = runtime.block_on(async {
        let mut io = io;
        sluice::http_serve::serve_connection(&mut io, app.clone(), LIMITS, None).await;
        io.output
    });
    if !answer.is_empty() {
        assert!(answer.starts_with(b"HTTP/1."), "{answer:?}");
    }
});

/// A runtime and the API's router, made once: the state of a daemon with
/// two pipelines, ready, whose reload requests go nowhere.
fn server() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Keep the receiver: POST /reload is then accepted.
        std::mem::forget(rx);
        let state = Arc::new(AdminState {
            pipelines: Mutex::new(vec![
                ("flights".into(), Arc::default(), true),
                ("w\"eird\\name\n".into(), Arc::default(), false),
            ]),
            plugins: Mutex::new(Vec::new()),
            sinks: Mutex::new(vec![("out".into(), Arc::default())]),
            state_dir: "/var/lib/sluice".into(),
            config_file: "/etc/sluice/sluice.toml".into(),
            ready: AtomicBool::new(true),
            reload: Some(tx),
            tap_token: None,
        });
        (runtime, router(state))
    })
}

/// A connection in memory: reads give `input`, `chunk` bytes at a time,
/// then the end (the client half-closed); writes are kept in `output`.
struct Memory {
    input: Vec<u8>,
    read: usize,
    chunk: usize,
    output: Vec<u8>,
}

impl hyper::rt::Read for &mut Memory {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut **self.get_mut();
        let n = buf
            .remaining()
            .min(this.chunk)
            .min(this.input.len() - this.read);
        buf.put_slice(&this.input[this.read..this.read + n]);
        this.read += n;
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for &mut Memory {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
