//! One generator thread's keep-alive connections: at most `max` open, idle ones reused LIFO, and
//! requests that find none wait in FIFO order (their wait counts in their latency). Single
//! threaded: `Rc`/`RefCell` and plain wakers, no cross-thread wake-ups.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// What a request gets from the pool.
pub enum Grant<C> {
    /// An idle connection.
    Reuse(C),
    /// Permission to open a new one (the pool counted it as open already).
    Open,
}

struct Waiter<C> {
    grant: RefCell<Option<Grant<C>>>,
    waker: RefCell<Option<Waker>>,
}

pub struct Pool<C> {
    idle: RefCell<Vec<C>>,
    open: Cell<usize>,
    max: usize,
    waiters: RefCell<VecDeque<Rc<Waiter<C>>>>,
}

impl<C> Pool<C> {
    pub fn new(max: usize) -> Pool<C> {
        Pool {
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            max: max.max(1),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn try_grant(&self) -> Option<Grant<C>> {
        if let Some(c) = self.idle.borrow_mut().pop() {
            return Some(Grant::Reuse(c));
        }
        if self.open.get() < self.max {
            self.open.set(self.open.get() + 1);
            return Some(Grant::Open);
        }
        None
    }

    /// Takes every idle connection out (to close them while the runtime still runs).
    pub fn take_idle(&self) -> Vec<C> {
        let idle = std::mem::take(&mut *self.idle.borrow_mut());
        self.open.set(self.open.get() - idle.len());
        idle
    }

    pub fn acquire(&self) -> Acquire<'_, C> {
        Acquire {
            pool: self,
            waiter: None,
        }
    }

    /// A connection is free for the next request.
    pub fn release(&self, c: C) {
        self.give(Grant::Reuse(c));
    }

    /// A connection closed (or never opened): its slot may be used to open another.
    pub fn closed(&self) {
        self.give(Grant::Open);
    }

    fn give(&self, g: Grant<C>) {
        let next = self.waiters.borrow_mut().pop_front();
        match (next, g) {
            (Some(w), g) => {
                *w.grant.borrow_mut() = Some(g);
                if let Some(waker) = w.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            (None, Grant::Reuse(c)) => self.idle.borrow_mut().push(c),
            (None, Grant::Open) => self.open.set(self.open.get() - 1),
        }
    }
}

pub struct Acquire<'a, C> {
    pool: &'a Pool<C>,
    waiter: Option<Rc<Waiter<C>>>,
}

impl<C> Future for Acquire<'_, C> {
    type Output = Grant<C>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant<C>> {
        let this = self.get_mut();
        match &this.waiter {
            None => {
                if let Some(g) = this.pool.try_grant() {
                    return Poll::Ready(g);
                }
                let w = Rc::new(Waiter {
                    grant: RefCell::new(None),
                    waker: RefCell::new(Some(cx.waker().clone())),
                });
                this.pool.waiters.borrow_mut().push_back(w.clone());
                this.waiter = Some(w);
                Poll::Pending
            }
            Some(w) => {
                let granted = w.grant.borrow_mut().take();
                match granted {
                    Some(g) => {
                        this.waiter = None;
                        Poll::Ready(g)
                    }
                    None => {
                        *w.waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl<C> Drop for Acquire<'_, C> {
    /// A request that gives up (timeout) hands on what it was granted, or leaves the queue.
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            let granted = w.grant.borrow_mut().take();
            match granted {
                Some(g) => self.pool.give(g),
                None => self
                    .pool
                    .waiters
                    .borrow_mut()
                    .retain(|x| !Rc::ptr_eq(x, &w)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<F: Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let waker = Waker::noop();
        match f.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn grants_up_to_max_then_queues() {
        let p: Pool<u32> = Pool::new(2);
        assert!(matches!(now(p.acquire()), Some(Grant::Open)));
        assert!(matches!(now(p.acquire()), Some(Grant::Open)));
        assert_eq!(p.open(), 2);
        let mut waiting = Box::pin(p.acquire());
        let waker = Waker::noop();
        assert!(waiting
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        assert_eq!(p.waiting(), 1);
        p.release(7);
        match waiting.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(Grant::Reuse(7)) => {}
            _ => panic!("the waiter gets the released connection"),
        }
        drop(waiting);
        p.release(7);
        assert!(matches!(now(p.acquire()), Some(Grant::Reuse(7))));
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_grant_on() {
        let p: Pool<u32> = Pool::new(1);
        assert!(matches!(now(p.acquire()), Some(Grant::Open)));
        let waker = Waker::noop();
        let mut a = Box::pin(p.acquire());
        assert!(a
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        p.closed(); // granted to `a`, which then times out
        drop(a);
        assert_eq!(p.open(), 0);
        let mut b = Box::pin(p.acquire());
        assert!(matches!(
            b.as_mut().poll(&mut Context::from_waker(waker)),
            Poll::Ready(Grant::Open)
        ));
        drop(b);
        let mut c = Box::pin(p.acquire());
        assert!(c
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        drop(c);
        assert_eq!(p.waiting(), 0);
    }
}
