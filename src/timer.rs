//! Coarse per-shard deadlines for the request path.
//!
//! Why not `monoio::time::timeout`: every call reads the clock, builds a 640-byte, 128-aligned
//! timer entry (copied along with every future that holds it) and inserts it into monoio's
//! wheel, then removes it again; a short proxied request paid that three times (client read,
//! client watch, upstream head), about 2–3 % of Berry's CPU per request (docs/performance.md).
//!
//! Here a connection owns a few [`Timer`]s for its whole life. Arming one is a few stores
//! against a clock the shard keeps fresh anyway ([`Timers::observe`]); the wheel touches a timer
//! only when its slot comes round, and then re-slots it lazily if the deadline moved. A
//! keep-alive connection serving thousands of requests costs the wheel about one operation per
//! slot period instead of two per request.
//!
//! Precision: deadlines are measured from the shard's coarse clock, refreshed every [`TICK`]
//! and at every request start, and checked every [`TICK`]. A timeout fires up to one tick
//! late, and early by however far the coarse clock lags: up to a tick normally, longer only
//! right after the shard itself stalled. Request timeouts are seconds; the one short delay
//! (the client watch's 20 ms) does not need better. A deadline already passed when armed ends
//! the run at its first poll (unless its future is ready then), not at the next tick.
//!
//! Idle shards: while no entry is in the wheel (no connection open, typically) the timer task
//! waits for the next arm instead of ticking, and the coarse clock reads the real one.
//!
//! The wheel is pure: [`Timers::advance`] takes the time, so tests drive it without sleeping.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// How often a busy shard's wheel is advanced and its coarse clock refreshed (an idle shard's
/// wheel rests; see `drive`).
pub const TICK: Duration = Duration::from_millis(TICK_MS);
const TICK_MS: u64 = 10;
/// Slots of the wheel: deadlines up to `SLOTS × TICK` ahead sit in their own slot; later ones
/// are looked at once per turn of the wheel and moved on.
const SLOTS: u64 = 512;

/// A deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// One shard's wheel and coarse clock. Lives in an `Rc` on its shard, never shared.
pub struct Timers {
    origin: Instant,
    now: Cell<Instant>,
    /// The timer task is parked (nothing armed), so nothing refreshes `now` every tick: reads
    /// of the coarse clock read the real one instead.
    paused: Cell<bool>,
    /// Set by [`Timers::cut`]: every cuttable timer counts as fired from now on.
    cut: Cell<bool>,
    wheel: RefCell<Wheel>,
}

struct Wheel {
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// `slots[t % SLOTS]` holds the entries slotted for tick `t`. A slot may also hold stale
    /// references (the entry moved to an earlier slot, or was freed and reused): an entry
    /// counts only where its own `slot` says it is.
    slots: Vec<Vec<u32>>,
    /// Every tick up to and including this one has been processed.
    done: u64,
    /// Wakers to call once the wheel is no longer borrowed.
    due: Vec<Waker>,
    /// Entries sitting in a slot. None: nothing for the timer task to do until one is armed.
    slotted: usize,
    /// The timer task, waiting for a first entry while `slotted` is 0 (an idle shard).
    parked: Option<Waker>,
}

#[derive(Default)]
struct Entry {
    deadline: Option<Instant>,
    /// The tick of the slot that holds this entry, if any.
    slot: Option<u64>,
    fired: bool,
    waker: Option<Waker>,
    /// A [`Timer`] owns the entry; a dropped timer's entry is freed when the wheel lets go.
    owned: bool,
    /// Ends early at [`Timers::cut`] (the timers bounding upstream waits).
    cuttable: bool,
}

impl Timers {
    pub fn new(now: Instant) -> Rc<Timers> {
        Rc::new(Timers {
            origin: now,
            now: Cell::new(now),
            paused: Cell::new(false),
            cut: Cell::new(false),
            wheel: RefCell::new(Wheel {
                entries: Vec::new(),
                free: Vec::new(),
                slots: (0..SLOTS).map(|_| Vec::new()).collect(),
                done: 0,
                due: Vec::new(),
                slotted: 0,
                parked: None,
            }),
        })
    }

    /// The shard's coarse clock: the latest time anyone on the shard read. Exact while the
    /// wheel is idle, when no tick keeps it fresh.
    pub fn now(&self) -> Instant {
        if self.paused.get() {
            self.observe(Instant::now());
        }
        self.now.get()
    }

    /// Moves the coarse clock forward to a time read elsewhere on the shard.
    pub fn observe(&self, now: Instant) {
        if now > self.now.get() {
            self.now.set(now);
        }
    }

    /// A new timer, disarmed.
    pub fn timer(self: &Rc<Self>) -> Timer {
        self.new_timer(false)
    }

    /// A new timer that [`Timers::cut`] ends early: for the waits a stopping shard must
    /// interrupt (an upstream that is slow to answer), not for the ones it still needs (the
    /// writes that tell clients why they were cut).
    pub fn cuttable_timer(self: &Rc<Self>) -> Timer {
        self.new_timer(true)
    }

    /// Ends every cuttable run now and every one started later, as if its deadline had
    /// passed. One-way: called when a draining shard's time is up.
    pub fn cut(&self) {
        self.cut.set(true);
        let wakers: Vec<Waker> = {
            let mut w = self.wheel.borrow_mut();
            (w.entries.iter_mut())
                .filter(|e| e.cuttable && e.deadline.is_some())
                .filter_map(|e| e.waker.take())
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn new_timer(self: &Rc<Self>, cuttable: bool) -> Timer {
        let mut w = self.wheel.borrow_mut();
        let idx = match w.free.pop() {
            Some(i) => i,
            None => {
                w.entries.push(Entry::default());
                (w.entries.len() - 1) as u32
            }
        };
        w.entries[idx as usize] = Entry {
            owned: true,
            cuttable,
            ..Entry::default()
        };
        Timer {
            timers: self.clone(),
            idx,
        }
    }

    /// Processes every tick up to `now`: fires the timers whose deadline passed and wakes
    /// their tasks. Called by the shard's timer task every [`TICK`].
    pub fn advance(&self, now: Instant) {
        self.observe(now);
        let mut due = {
            let mut w = self.wheel.borrow_mut();
            let target = self.tick_of(now);
            // After a stall longer than a turn, one pass over every slot catches up.
            let first = (w.done + 1).max(target.saturating_sub(SLOTS - 1));
            for t in first..=target {
                w.done = t;
                w.process(t, now, self);
            }
            w.done = w.done.max(target);
            std::mem::take(&mut w.due)
        };
        for waker in due.drain(..) {
            waker.wake();
        }
        // Keep the allocation for the next tick.
        self.wheel.borrow_mut().due = due;
    }

    /// Ready when an entry is slotted; otherwise keeps `waker` to wake at the next arm.
    fn park_while_empty(&self, waker: &Waker) -> Poll<()> {
        let mut w = self.wheel.borrow_mut();
        let idle = w.slotted == 0;
        self.paused.set(idle);
        if !idle {
            w.parked = None;
            return Poll::Ready(());
        }
        w.parked = Some(waker.clone());
        Poll::Pending
    }

    /// Timers in the wheel's table (armed or not, or dropped and waiting for their slot).
    #[cfg(test)]
    fn len(&self) -> usize {
        let w = self.wheel.borrow();
        w.entries.len() - w.free.len()
    }

    fn tick_of(&self, at: Instant) -> u64 {
        // In u64 milliseconds: `Duration::as_millis` is a u128, and dividing that is a
        // library call on every arm.
        let d = at.saturating_duration_since(self.origin);
        (d.as_secs() * 1000 + u64::from(d.subsec_millis())) / TICK_MS
    }
}

impl Wheel {
    fn process(&mut self, t: u64, now: Instant, timers: &Timers) {
        let i = (t % SLOTS) as usize;
        let mut refs = std::mem::take(&mut self.slots[i]);
        for &idx in &refs {
            let e = &mut self.entries[idx as usize];
            match e.slot {
                Some(s) if s <= t && s % SLOTS == t % SLOTS => e.slot = None,
                _ => continue, // a stale reference
            }
            self.slotted -= 1;
            if !e.owned {
                self.free.push(idx);
                continue;
            }
            let Some(deadline) = e.deadline else { continue };
            if deadline <= now {
                e.deadline = None;
                e.fired = true;
                if let Some(w) = &e.waker {
                    self.due.push(w.clone());
                }
            } else {
                // `done` is `t`, so this lands 1 to SLOTS - 1 ticks ahead: never in slot `i`,
                // and `refs` can be handed back below without losing anything.
                self.slot(idx, timers.tick_of(deadline));
            }
        }
        refs.clear();
        self.slots[i] = refs;
    }

    /// Puts an entry where the wheel will see it no later than `deadline`'s tick.
    fn slot(&mut self, idx: u32, tick: u64) {
        let at = tick.clamp(self.done + 1, self.done + SLOTS - 1);
        let e = &mut self.entries[idx as usize];
        if e.slot.is_some_and(|s| s <= at) {
            return; // seen in time; moved on from there if still early
        }
        if e.slot.is_none() {
            self.slotted += 1;
        }
        e.slot = Some(at);
        self.slots[(at % SLOTS) as usize].push(idx);
    }
}

/// A reusable deadline owned by a connection. One future at a time runs under it.
pub struct Timer {
    timers: Rc<Timers>,
    idx: u32,
}

impl Timer {
    /// The shard's coarse clock (see [`Timers::now`]).
    pub fn now(&self) -> Instant {
        self.timers.now()
    }

    /// Runs `fut` until it finishes or `deadline` passes. The future is polled first, so one
    /// that is ready at the deadline still counts as finished.
    pub fn run<F: Future>(&self, deadline: Instant, fut: F) -> Timed<'_, F> {
        Timed {
            timer: self,
            deadline: Some(deadline),
            fut,
        }
    }

    /// [`Timer::run`] with a deadline `timeout` from the coarse clock.
    pub fn run_for<F: Future>(&self, timeout: Duration, fut: F) -> Timed<'_, F> {
        self.run(self.now() + timeout, fut)
    }

    fn arm(&self, deadline: Instant) {
        let tick = self.timers.tick_of(deadline);
        let passed = deadline <= self.timers.now();
        let mut w = self.timers.wheel.borrow_mut();
        let e = &mut w.entries[self.idx as usize];
        if passed {
            // Already over: the run ends at its first poll unless its future is ready then.
            // Waiting for the next tick would let bytes that keep arriving just in time stretch
            // a header or body timeout indefinitely.
            e.deadline = None;
            e.fired = true;
            return;
        }
        e.deadline = Some(deadline);
        e.fired = false;
        w.slot(self.idx, tick);
        if w.parked.is_some() {
            // The first deadline on an idle shard: the wheel turns again.
            let task = w.parked.take();
            drop(w);
            task.into_iter().for_each(Waker::wake);
        }
    }

    fn disarm(&self) {
        let mut w = self.timers.wheel.borrow_mut();
        let e = &mut w.entries[self.idx as usize];
        e.deadline = None;
        e.fired = false;
    }

    fn fired(&self) -> bool {
        let e = &self.timers.wheel.borrow().entries[self.idx as usize];
        e.fired || (e.cuttable && self.timers.cut.get())
    }

    fn register(&self, waker: &Waker) {
        let mut w = self.timers.wheel.borrow_mut();
        let e = &mut w.entries[self.idx as usize];
        // A task's waker is the same on every poll: clone it once per connection.
        if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            e.waker = Some(waker.clone());
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let mut w = self.timers.wheel.borrow_mut();
        let e = &mut w.entries[self.idx as usize];
        e.owned = false;
        e.deadline = None;
        e.waker = None;
        if e.slot.is_none() {
            w.free.push(self.idx);
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Timer::run`]: a plain struct rather than an `async fn`, whose state
    /// would hold the inner future twice (argument and pinned local) and be copied with it.
    pub struct Timed<'t, F> {
        timer: &'t Timer,
        // Armed on the first poll; `None` after.
        deadline: Option<Instant>,
        #[pin]
        fut: F,
    }

    impl<'t, F> PinnedDrop for Timed<'t, F> {
        fn drop(this: Pin<&mut Self>) {
            if this.deadline.is_none() {
                this.timer.disarm();
            }
        }
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(deadline) = this.deadline.take() {
            this.timer.arm(deadline);
        }
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if this.timer.fired() {
            return Poll::Ready(Err(Elapsed));
        }
        this.timer.register(cx.waker());
        Poll::Pending
    }
}

/// Drives a shard's wheel until the runtime ends. While no entry is slotted (typically: no
/// connection open) it waits for the first arm instead of waking the shard every tick; the
/// coarse clock then reads the real one, so a deadline set after a long pause is not early.
pub async fn drive(timers: Rc<Timers>) {
    loop {
        std::future::poll_fn(|cx| timers.park_while_empty(cx.waker())).await;
        monoio::time::sleep(TICK).await;
        timers.advance(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Polls `run` once with a counting waker; returns the pinned future and the counter.
    fn start(timer: &Timer, deadline: Instant) -> (Run<'_>, Arc<Count>) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut fut: Run<'_> = Box::pin(timer.run(deadline, std::future::pending::<()>()));
        let waker = Waker::from(count.clone());
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        (fut, count)
    }

    type Run<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), Elapsed>> + 'a>>;

    /// Polls again with the task's own waker, as the runtime would.
    fn poll_again(fut: &mut Run<'_>, count: &Arc<Count>) -> Poll<Result<(), Elapsed>> {
        let waker = Waker::from(count.clone());
        fut.as_mut().poll(&mut Context::from_waker(&waker))
    }

    /// Advancing to `quiet` neither wakes nor ends the run; advancing to `fired` does both.
    fn quiet_then_fired(
        timers: &Timers,
        fut: &mut Run<'_>,
        woken: &Arc<Count>,
        quiet: Instant,
        fired: Instant,
    ) {
        timers.advance(quiet);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0, "woken early");
        assert!(poll_again(fut, woken).is_pending());
        timers.advance(fired);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "not woken");
        assert_eq!(poll_again(fut, woken), Poll::Ready(Err(Elapsed)));
    }

    /// Polls the timer task's wait for a first entry with a counting waker.
    fn park(timers: &Timers) -> (Poll<()>, Arc<Count>) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        (timers.park_while_empty(&waker), count)
    }

    #[test]
    fn a_cut_ends_cuttable_runs_at_once_and_leaves_the_others() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let (upstream, client) = (timers.cuttable_timer(), timers.timer());
        let (mut up, up_woken) = start(&upstream, t0 + ms(60_000));
        let (mut cl, cl_woken) = start(&client, t0 + ms(60_000));
        timers.cut();
        assert_eq!(
            up_woken.0.load(Ordering::SeqCst),
            1,
            "the cut wakes its task"
        );
        assert_eq!(poll_again(&mut up, &up_woken), Poll::Ready(Err(Elapsed)));
        assert_eq!(cl_woken.0.load(Ordering::SeqCst), 0);
        assert!(
            poll_again(&mut cl, &cl_woken).is_pending(),
            "a client write still runs"
        );
        drop(up);
        // A run started after the cut ends at its first poll.
        let mut later: Run<'_> =
            Box::pin(upstream.run(t0 + ms(60_000), std::future::pending::<()>()));
        assert_eq!(poll_again(&mut later, &up_woken), Poll::Ready(Err(Elapsed)));
    }

    #[test]
    fn an_empty_wheel_parks_its_task_until_the_first_arm() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        let (parked, task) = park(&timers);
        assert!(parked.is_pending(), "nothing armed: the task waits");
        let (mut fut, woken) = start(&timer, t0 + ms(100));
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the arm wakes the task");
        assert!(park(&timers).0.is_ready());
        quiet_then_fired(&timers, &mut fut, &woken, t0 + ms(50), t0 + ms(100));
        assert!(park(&timers).0.is_pending(), "empty again once fired");
    }

    #[test]
    fn a_parked_wheel_reads_the_real_clock() {
        // A wheel whose clock was last refreshed a second ago, and whose task then parked.
        let Some(t0) = Instant::now().checked_sub(ms(1000)) else {
            return; // a machine up for under a second: nothing to go back to
        };
        let timers = Timers::new(t0);
        assert_eq!(
            timers.now(),
            t0,
            "ticking: the coarse clock as last refreshed"
        );
        assert!(park(&timers).0.is_pending());
        let before = Instant::now();
        assert!(
            timers.now() >= before,
            "a deadline set now would be a second early"
        );
    }

    #[test]
    fn a_dropped_timer_keeps_the_wheel_turning_until_its_slot_frees_it() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        drop(start(&timer, t0 + ms(30)));
        drop(timer);
        assert!(park(&timers).0.is_ready(), "its slot still holds it");
        timers.advance(t0 + ms(30));
        assert_eq!(timers.len(), 0);
        assert!(park(&timers).0.is_pending());
        // A re-slotted entry (deadline beyond one turn) is counted once.
        let far = timers.timer();
        let turn = TICK * (SLOTS as u32);
        let (_fut, _woken) = start(&far, t0 + turn * 3);
        for i in 1..=10u32 {
            timers.advance(t0 + turn * i / 4);
            assert!(park(&timers).0.is_ready(), "at quarter {i}");
        }
        timers.advance(t0 + turn * 3);
        assert!(park(&timers).0.is_pending());
    }

    #[test]
    fn fires_once_its_tick_has_passed_and_not_before() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        let (mut fut, woken) = start(&timer, t0 + ms(100));
        quiet_then_fired(&timers, &mut fut, &woken, t0 + ms(95), t0 + ms(100));
    }

    #[test]
    fn a_deadline_already_passed_ends_a_pending_run_at_once() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        timers.advance(t0 + ms(200));
        let mut fut = Box::pin(timer.run(t0 + ms(100), std::future::pending::<()>()));
        let cx = &mut Context::from_waker(Waker::noop());
        assert_eq!(fut.as_mut().poll(cx), Poll::Ready(Err(Elapsed)));
        drop(fut);
        // A ready future still wins over a passed deadline.
        let mut ready = Box::pin(timer.run(t0 + ms(100), async { 1 }));
        assert_eq!(ready.as_mut().poll(cx), Poll::Ready(Ok(1)));
    }

    #[test]
    fn a_finished_future_is_not_fired_later() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        let out = {
            let mut fut = Box::pin(timer.run(t0 + ms(50), async { 7 }));
            fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        assert_eq!(out, Poll::Ready(Ok(7)));
        timers.advance(t0 + ms(500));
        assert!(!timer.fired());
    }

    #[test]
    fn rearming_later_moves_the_deadline_without_firing_early() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        // A keep-alive connection: each request re-arms the same timer further out.
        for i in 0..10u64 {
            let (fut, _) = start(&timer, t0 + ms(i * 10 + 100));
            drop(fut);
            timers.advance(t0 + ms(i * 10));
        }
        let (mut fut, woken) = start(&timer, t0 + ms(300));
        quiet_then_fired(&timers, &mut fut, &woken, t0 + ms(290), t0 + ms(310));
    }

    #[test]
    fn rearming_earlier_is_seen_at_the_earlier_tick() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        let (fut, _) = start(&timer, t0 + ms(3_000));
        drop(fut);
        let (mut fut, woken) = start(&timer, t0 + ms(40));
        timers.advance(t0 + ms(45));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_again(&mut fut, &woken), Poll::Ready(Err(Elapsed)));
    }

    #[test]
    fn deadlines_beyond_one_turn_fire_on_time() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        let far = t0 + TICK * (SLOTS as u32) * 3 + ms(5);
        let (mut fut, woken) = start(&timer, far);
        let mut t = t0;
        while t + TICK < far {
            t += TICK;
            timers.advance(t);
            assert_eq!(
                woken.0.load(Ordering::SeqCst),
                0,
                "fired early at {:?}",
                t - t0
            );
        }
        timers.advance(far + TICK);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_again(&mut fut, &woken), Poll::Ready(Err(Elapsed)));
    }

    #[test]
    fn a_long_stall_catches_up_in_one_pass() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let timer = timers.timer();
        let (mut fut, woken) = start(&timer, t0 + ms(20));
        timers.advance(t0 + TICK * (SLOTS as u32) * 5);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_again(&mut fut, &woken), Poll::Ready(Err(Elapsed)));
    }

    #[test]
    fn dropped_timers_are_freed_and_reused() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        for _ in 0..100 {
            let timer = timers.timer();
            let (fut, _) = start(&timer, t0 + ms(30));
            drop(fut);
            let (fut, _) = start(&timer, t0 + ms(30));
            drop(fut); // armed and slotted when dropped
        }
        // Freed as the wheel passes their slot; the table never holds more than it needs.
        timers.advance(t0 + ms(100));
        assert_eq!(timers.len(), 0);
        let a = timers.timer();
        let b = timers.timer();
        assert_eq!(timers.len(), 2);
        drop((a, b));
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn observe_only_moves_the_clock_forward() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        timers.observe(t0 + ms(5));
        timers.observe(t0 + ms(1));
        assert_eq!(timers.now(), t0 + ms(5));
        let timer = timers.timer();
        assert_eq!(timer.now(), t0 + ms(5));
    }
}
