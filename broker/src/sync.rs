//! Shard-local wake-up primitives. Everything here is `!Send`: it lives on one executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

pub use sluice_storage::{Notified, Notify};

/// A single-value, single-task channel.
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let slot = Rc::new(OneshotSlot {
        value: RefCell::new(None),
        waker: RefCell::new(None),
        closed: Cell::new(false),
    });
    (OneshotSender { slot: slot.clone() }, OneshotReceiver { slot })
}

struct OneshotSlot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
    /// The sender was dropped (without sending) or the receiver was dropped.
    closed: Cell<bool>,
}

pub struct OneshotSender<T> {
    slot: Rc<OneshotSlot<T>>,
}

impl<T> OneshotSender<T> {
    /// Delivers `value`; returns it back when the receiver is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        if self.slot.closed.get() {
            return Err(value);
        }
        *self.slot.value.borrow_mut() = Some(value);
        if let Some(waker) = self.slot.waker.borrow_mut().take() {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        self.slot.closed.set(true);
        if let Some(waker) = self.slot.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

pub struct OneshotReceiver<T> {
    slot: Rc<OneshotSlot<T>>,
}

impl<T> Future for OneshotReceiver<T> {
    /// `None` when the sender was dropped without sending.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(value) = self.slot.value.borrow_mut().take() {
            return Poll::Ready(Some(value));
        }
        if self.slot.closed.get() {
            return Poll::Ready(None);
        }
        *self.slot.waker.borrow_mut() = Some(context.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for OneshotReceiver<T> {
    fn drop(&mut self) {
        self.slot.closed.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_delivers_and_reports_a_dropped_sender() {
        glommio::LocalExecutor::default().run(async {
            let (sender, receiver) = oneshot::<u32>();
            glommio::spawn_local(async move {
                let _ = sender.send(7);
            })
            .detach();
            assert_eq!(receiver.await, Some(7));
            let (sender, receiver) = oneshot::<u32>();
            drop(sender);
            assert_eq!(receiver.await, None);
        });
    }

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
