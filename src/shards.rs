//! Thread per core: one single-threaded runtime per thread, each serving its
//! own copy of every TCP socket (see [`crate::Server::spread_over`]). A
//! connection never moves between threads, and a thread with nothing to do
//! sleeps in its own epoll set instead of being woken for another thread's
//! sockets (docs/benchmarks.md has the measurements behind this).

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// The calling thread's runtime plus `threads - 1` more, each on a thread
/// of its own. Dropping it stops and joins the extra threads, dropping
/// whatever tasks they still hold.
pub struct Shards {
    main: Runtime,
    others: Vec<(Handle, JoinHandle<()>)>,
    stop: CancellationToken,
}

impl Shards {
    pub fn start(threads: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut shards = Shards {
            main: single_threaded()?,
            others: Vec::new(),
            stop: stop.clone(),
        };
        for n in 1..threads.max(1) {
            let (handle_tx, handle_rx) = mpsc::channel();
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tsecho-worker-{n}"))
                .spawn(move || match single_threaded() {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(stop.cancelled());
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| io::Error::other("a worker thread died while starting"))??;
            shards.others.push((handle, thread));
        }
        Ok(shards)
    }

    /// Every runtime, the calling thread's first.
    pub fn handles(&self) -> Vec<Handle> {
        std::iter::once(self.main.handle().clone())
            .chain(self.others.iter().map(|(handle, _)| handle.clone()))
            .collect()
    }

    /// Runs `future` on the calling thread's runtime while the others serve.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.main.block_on(future)
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop.cancel();
        for (_, thread) in self.others.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A runtime on the calling thread alone: each shard's, and the one the
/// one-connection commands (client, ping) run on.
pub fn single_threaded() -> io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}
