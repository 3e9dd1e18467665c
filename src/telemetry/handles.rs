//! The exporter's caches of registered series: handles are registered once and found again by
//! index ([`Table`]) or by a small integer key ([`FastMap`]); counter increments are folded
//! locally and handed to the recorder once per report ([`Batched`]).

use std::collections::HashMap;

use metrics::Counter;

/// Maps keyed by a few small integers, looked up once or twice per folded request: SipHash's
/// protection against chosen keys is not needed for config indices and status codes, and it
/// was the control thread's largest cost after the fold itself.
pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<MixHasher>>;

/// A multiply-rotate hasher for short integer keys (the scheme of rustc's FxHasher).
#[derive(Default)]
pub(super) struct MixHasher(u64);

impl std::hash::Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A lazily registered table of handles.
pub(super) struct Table<T> {
    slots: Vec<Option<T>>,
}

impl<T> Table<T> {
    pub(super) fn new(n: usize) -> Self {
        Table {
            slots: (0..n).map(|_| None).collect(),
        }
    }

    pub(super) fn get<U: Into<T>>(&mut self, i: usize, make: impl FnOnce() -> U) -> Option<&mut T> {
        let slot = self.slots.get_mut(i)?;
        Some(slot.get_or_insert_with(|| make().into()))
    }
}

impl Table<Batched> {
    pub(super) fn flush(&mut self) {
        self.slots.iter_mut().flatten().for_each(Batched::flush);
    }
}

/// A counter and the increments folded into it since the last flush: one atomic add (two,
/// with the registry's generation count) per series per report instead of per event.
pub(super) struct Batched {
    counter: Counter,
    pending: u64,
}

impl From<Counter> for Batched {
    fn from(counter: Counter) -> Batched {
        Batched {
            counter,
            pending: 0,
        }
    }
}

impl Batched {
    pub(super) fn add(&mut self, n: u64) {
        self.pending += n;
    }

    pub(super) fn flush(&mut self) {
        if self.pending > 0 {
            self.counter.increment(std::mem::take(&mut self.pending));
        }
    }
}
