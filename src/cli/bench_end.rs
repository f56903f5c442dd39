//! The end of a `tsecho bench` run, as every connection waits for it.
//!
//! A connection waits for the end beside every read, thousands of times a
//! second. A CancellationToken takes two locks each time it is asked
//! (perf: about 0.4% of the client's CPU at 50 connections); asking here
//! is an atomic load, and the lock is taken once per waiting task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct End {
    ended: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl End {
    /// Ends the run: every wait returns, now or when next asked.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        let waiting = match self.waiting.lock() {
            Ok(mut waiting) => std::mem::take(&mut *waiting),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Returns once the run has ended. Keep it across waits (pinned):
    /// each new one registers its task again.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            end: self,
            registered: None,
        }
    }
}

pub struct Wait<'a> {
    end: &'a End,
    registered: Option<Waker>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.end.has_ended() {
            return Poll::Ready(());
        }
        if let Some(waker) = &this.registered
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let Ok(mut waiting) = this.end.waiting.lock() else {
            return Poll::Ready(());
        };
        waiting.push(cx.waker().clone());
        this.registered = Some(cx.waker().clone());
        // `end` sets the flag before it takes the lock: if it emptied the
        // list before this push, the flag says so now.
        if this.end.has_ended() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiting_task_wakes_when_the_run_ends() {
        let end = Arc::new(End::default());
        let waiter = tokio::spawn({
            let end = end.clone();
            async move {
                let wait = end.wait();
                tokio::pin!(wait);
                for _ in 0..3 {
                    tokio::select! {
                        biased;
                        () = &mut wait => return true,
                        () = tokio::task::yield_now() => {}
                    }
                }
                (&mut wait).await;
                true
            }
        });
        tokio::task::yield_now().await;
        end.end();
        assert!(waiter.await.unwrap());
        assert!(end.has_ended());
        // Asked after the end, a new wait returns at once.
        end.wait().await;
    }
}
