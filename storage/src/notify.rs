//! A single-threaded wake-up primitive: tasks wait for the next `notify_all`. Everything here is `!Send`: it lives
//! on one executor. The log uses it for its flusher and waiters; the broker re-exports it for Fetch long polling and
//! shutdown, so that there is one implementation with one set of tests.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting at the moment of `notify_all`. Nothing is queued: a waiter re-checks its condition
/// after each wake-up. Used by the log (flusher wake-ups, durability and read-ahead waiters) and by the broker
/// (Fetch long polling, woken by appends, and shutdown).
///
/// A waiter that gives up (a fetch whose wait timed out) takes its waker back out when it is dropped. Without that,
/// every timed-out long poll on a partition that receives no data left a waker behind until the next append, and a
/// glommio waker keeps its whole task (the fetch request and its state) alive: memory grew with every idle poll.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Completes at the first `notify_all` after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), registered: None }
    }

    /// Wakers currently registered (for tests of the bound above).
    pub fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Removes one registration of `waker`, if `notify_all` has not taken it already.
    fn deregister(&self, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if let Some(position) = waiters.iter().position(|registered| registered.will_wake(waker)) {
            waiters.swap_remove(position);
        }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// The waker this future put in `notify.waiters` (each future registers at most one).
    registered: Option<Waker>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            // notify_all took every registered waker.
            self.registered = None;
            return Poll::Ready(());
        }
        if self.registered.as_ref().is_some_and(|waker| waker.will_wake(context.waker())) {
            return Poll::Pending;
        }
        if let Some(stale) = self.registered.take() {
            self.notify.deregister(&stale);
        }
        let waker = context.waker().clone();
        self.notify.waiters.borrow_mut().push(waker.clone());
        self.registered = Some(waker);
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(waker) = self.registered.take() {
            if self.notify.generation.get() == self.generation {
                self.notify.deregister(&waker);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    /// A waiter that stops waiting (timed out) leaves no waker behind; one that was woken needs no clean-up.
    #[test]
    fn abandoned_waiters_deregister() {
        glommio::LocalExecutor::default().run(async {
            let notify = Notify::default();
            for _ in 0..100 {
                let waited = futures_lite::future::or(
                    async {
                        notify.notified().await;
                        true
                    },
                    async {
                        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                        false
                    },
                )
                .await;
                assert!(!waited);
            }
            assert_eq!(notify.waiter_count(), 0);
            // Two waiters of one task: dropping one keeps the other registered and woken.
            let first = notify.notified();
            let mut second = Box::pin(notify.notified());
            let mut first = Box::pin(first);
            let waker = futures_lite::future::poll_fn(|context| Poll::Ready(context.waker().clone())).await;
            let mut context = Context::from_waker(&waker);
            assert!(first.as_mut().poll(&mut context).is_pending());
            assert!(second.as_mut().poll(&mut context).is_pending());
            assert_eq!(notify.waiter_count(), 2);
            drop(first);
            assert_eq!(notify.waiter_count(), 1);
            notify.notify_all();
            assert!(second.as_mut().poll(&mut context).is_ready());
            assert_eq!(notify.waiter_count(), 0);
        });
    }

    #[test]
    fn notify_wakes_only_later_waiters() {
        glommio::LocalExecutor::default().run(async {
            let notify = Rc::new(Notify::default());
            notify.notify_all();
            let waiter = notify.clone();
            let task = glommio::spawn_local(async move { waiter.notified().await });
            glommio::yield_if_needed().await;
            glommio::executor().yield_task_queue_now().await;
            notify.notify_all();
            task.await;
        });
    }
}
