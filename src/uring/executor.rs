//! The ring thread's own executor: its connections' futures in a slab, a
//! queue of those woken, and a loop that polls them and then sleeps in
//! `io_uring_enter`, not in epoll.
//!
//! This is what `--io uring` leaves tokio for. Under tokio a reply cost a
//! task wake-up through its scheduler, an epoll_wait to learn of the ring
//! and a turn of a driver task (docs/benchmarks.md, issue 17: about 1,000
//! instructions a reply, all of the gap to the C servers). Here a
//! completion wakes its connection by pushing an index, and the thread
//! sleeps where its completions arrive.
//!
//! Wakes from other threads (a timer of the shard's runtime, the drain's
//! tokens, a new connection) go through `Remote`: a locked queue, and an
//! eventfd the ring reads, written only while the thread sleeps.

#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

use super::setup;
use super::thread as driver;

pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// The `Remote` of the executor running on this thread, if any: how a
    /// waker knows that it may take the fast path.
    static HOME: Cell<*const Remote> = const { Cell::new(std::ptr::null()) };
    /// Tasks woken on this thread since the executor last looked.
    static WOKEN_HERE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// What other threads hand the executor.
pub struct Remote {
    incoming: Mutex<Vec<Task>>,
    woken: Mutex<Vec<u32>>,
    /// Something is in `incoming` or `woken`, or the executor must stop.
    pending: AtomicBool,
    /// The executor is about to sleep, or sleeps, in the ring.
    sleeping: AtomicBool,
    closed: AtomicBool,
    /// Written to wake the thread from its sleep in the ring.
    wake_fd: OwnedFd,
}

impl Remote {
    pub fn new() -> io::Result<Self> {
        Ok(Remote {
            incoming: Mutex::new(Vec::new()),
            woken: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            wake_fd: setup::eventfd()?,
        })
    }

    pub fn spawn(&self, task: Task) {
        lock(&self.incoming).push(task);
        if self.is_closed() {
            // The thread is gone or going: the connection closes here.
            lock(&self.incoming).clear();
            return;
        }
        self.signal();
    }

    /// The executor drops every task it holds and its thread ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.signal();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn wake_fd(&self) -> &OwnedFd {
        &self.wake_fd
    }

    fn wake_from_afar(&self, index: u32) {
        lock(&self.woken).push(index);
        self.signal();
    }

    /// Pairs with the executor's `may_sleep`: either it sees `pending`,
    /// or this sees it sleeping and writes the eventfd its ring reads.
    fn signal(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an eventfd we own.
            // Failure is only a full counter, which wakes the reader anyway.
            let _ = unsafe { libc::write(self.wake_fd.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A task's waker: its index, and whether it is already queued.
struct TaskWaker {
    index: u32,
    queued: AtomicBool,
    home: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if HOME.get() == Arc::as_ptr(&self.home) {
            WOKEN_HERE.with_borrow_mut(|woken| woken.push(self.index));
        } else {
            self.home.wake_from_afar(self.index);
        }
    }
}

struct Slot {
    task: Task,
    waker: Waker,
    state: Arc<TaskWaker>,
}

pub struct Executor {
    remote: Arc<Remote>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Swapped with the thread's queue, so that polling can wake more.
    ready: Vec<u32>,
}

impl Executor {
    pub fn new(remote: Arc<Remote>) -> Self {
        Executor {
            remote,
            slots: Vec::new(),
            free: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Runs until the remote is closed, then drops every task.
    pub fn run(mut self) {
        HOME.set(Arc::as_ptr(&self.remote));
        loop {
            if self.remote.pending.swap(false, Ordering::SeqCst) {
                if self.remote.is_closed() {
                    break;
                }
                self.take_remote();
            }
            self.poll_woken();
            // What the futures queued goes in with the wait, if there is
            // one: at one connection, one system call per request.
            if self.may_sleep() {
                let _ = driver::with(|d| d.submit_and_wait());
                self.remote.sleeping.store(false, Ordering::SeqCst);
            } else {
                let _ = driver::with(|d| d.turn());
            }
        }
        self.slots.clear();
        lock(&self.remote.incoming).clear();
        HOME.set(std::ptr::null());
    }

    /// Whether nothing is left to do, announced to the other threads.
    fn may_sleep(&self) -> bool {
        if WOKEN_HERE.with_borrow(|woken| !woken.is_empty()) {
            return false;
        }
        self.remote.sleeping.store(true, Ordering::SeqCst);
        if self.remote.pending.load(Ordering::SeqCst) {
            self.remote.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn take_remote(&mut self) {
        let incoming = std::mem::take(&mut *lock(&self.remote.incoming));
        for task in incoming {
            let index = self.insert(task);
            WOKEN_HERE.with_borrow_mut(|woken| woken.push(index));
        }
        let woken = std::mem::take(&mut *lock(&self.remote.woken));
        WOKEN_HERE.with_borrow_mut(|here| here.extend(woken));
    }

    fn insert(&mut self, task: Task) -> u32 {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        let state = Arc::new(TaskWaker {
            index,
            queued: AtomicBool::new(true),
            home: self.remote.clone(),
        });
        let waker = Waker::from(state.clone());
        self.slots[index as usize] = Some(Slot { task, waker, state });
        index
    }

    fn poll_woken(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        WOKEN_HERE.with_borrow_mut(|woken| std::mem::swap(woken, &mut ready));
        for index in ready.drain(..) {
            self.poll_one(index);
        }
        self.ready = ready;
    }

    fn poll_one(&mut self, index: u32) {
        let Some(Some(slot)) = self.slots.get_mut(index as usize) else {
            return;
        };
        slot.state.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&slot.waker);
        let task = &mut slot.task;
        let done = match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx))) {
            Ok(poll) => poll.is_ready(),
            Err(_) => {
                tracing::error!("a connection's task panicked; it is dropped");
                true
            }
        };
        if done {
            self.slots[index as usize] = None;
            self.free.push(index);
        }
    }
}
